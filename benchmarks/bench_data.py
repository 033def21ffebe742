"""Data benchmark: how long a sweep's dataset takes to generate, the regional task against the global one.

Run: ``python benchmarks/bench_data.py [--items 1200] [--size 64] [--repeats 3]``. Every sweep generates all its
items once at its start (``train_samples + val_samples``, 1200 by default), in each process or Ray worker. Prints, for
:class:`hamgrad.data.GlobalContextShapes` (the reference) and :class:`hamgrad.data.RegionalShapes` at R = 1, 2, 4
and 8, the median wall time over ``--repeats`` passes of every item, the time per item, and the ratio to the
reference measured in this process, plus the regional datasets' closed-form global ceiling on 200 items and its
time. Nothing is asserted (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from hamgrad.data import GlobalContextShapes, RegionalShapes


def _seconds(dataset, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    print(f"{a.items} items of {a.size}×{a.size}, median of {a.repeats} passes; load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPU cores")
    GlobalContextShapes(8, size=a.size)[0]  # warm-up (imports, first calls), untimed
    reference = _seconds(GlobalContextShapes(a.items, size=a.size), a.repeats)
    print(f"{'GlobalContextShapes':>32}: {reference:6.2f} s, {1e3 * reference / a.items:5.2f} ms/item, 1.00×")
    for regions in (1, 2, 4, 8):
        ds = RegionalShapes(a.items, size=a.size, regions=regions, shapes_per_region=(3, 4))
        seconds = _seconds(ds, a.repeats)
        start = time.perf_counter()
        ceiling = ds.global_ceiling(range(min(200, a.items)))
        ceiling_seconds = time.perf_counter() - start
        disagree = "–" if ceiling["miou_disagree"] is None else f"{100 * ceiling['miou_disagree']:.1f}"
        print(f"{f'RegionalShapes(regions={regions})':>32}: {seconds:6.2f} s, {1e3 * seconds / a.items:5.2f} ms/item, "
              f"{seconds / reference:.2f}×; global ceiling mIoU {100 * ceiling['miou']:.1f} (disagreeing images "
              f"{disagree}) in {ceiling_seconds:.2f} s")


if __name__ == "__main__":
    main()
