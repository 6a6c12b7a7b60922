"""KID's reported stderr against its real spread over independent sample sets (docs/metrics.md).

Twenty disjoint sets of 50 training digits, each scored against the same 50 test digits with
`kid_digits` (default subsets of half the set): the standard deviation of the 20 values is the
spread a user's KID really has at n = 50; the median reported stderr is what `kid` says.
Run: python benchmarks/kid_spread.py  (about 10 s on one CPU core)
"""

import statistics

import torch

from sdescore.metrics import digits_data, kid_digits


def main() -> None:
    train, test = digits_data("train")[0], digits_data("test")[0]
    values, stderrs = [], []
    for i in range(20):
        res = kid_digits(
            train[50 * i : 50 * (i + 1)],
            test[:50],
            subsets=50,
            generator=torch.Generator().manual_seed(i),
        )
        values.append(res.value)
        stderrs.append(res.stderr)
    print(f"subset_size {res.extra['subset_size']}")
    print(f"spread of KID over 20 independent sample sets of 50: {statistics.stdev(values):.3g}")
    print(f"median reported stderr: {statistics.median(stderrs):.3g}")


if __name__ == "__main__":
    main()
