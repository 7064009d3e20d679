"""Time the nightly report on a finished output folder, without rerunning the job.

The folder's tables (Parquet), resolved config and run.json are linked into a scratch folder
and ``jaxvol.report.write_report`` writes ``report.html`` there (the job's own report stage
does the same in ``jaxvol.jobs.merge``). Prints the seconds of each of ``--repeat`` calls
(the first includes the imports it triggers) and the report's size.

    python scripts/bench_report.py /tmp/nightly-out [--repeat 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import tempfile
import time


def _scratch(source: pathlib.Path, target: pathlib.Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(source):
        if name.endswith((".parquet", ".toml", ".json")):
            link = target / name
            if not link.exists():
                link.symlink_to(source / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path, help="a finished nightly output folder")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep", type=pathlib.Path, default=None,
                        help="write the report into this folder (kept) instead of a temporary one")
    args = parser.parse_args()
    started = time.perf_counter()
    import pandas as pd

    from jaxvol.jobs import config as config_mod
    from jaxvol.jobs.merge import TABLES
    from jaxvol.report import write_report
    imports = time.perf_counter() - started
    target = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="jaxvol-report-"))
    _scratch(args.out.resolve(), target)
    config = config_mod.load_config(target / "config.toml")
    config["report"]["enabled"] = True
    summary = json.loads((target / "run.json").read_text())
    tables = {n: pd.read_parquet(target / f"{n}.parquet") if (target / f"{n}.parquet").exists()
              else None for n in TABLES}
    print(f"imports {imports:.2f} s; tables read {time.perf_counter() - started - imports:.2f} s")
    for attempt in range(args.repeat):
        t0 = time.perf_counter()
        write_report(target, config, summary, tables, None)
        print(f"write_report call {attempt + 1}: {time.perf_counter() - t0:.2f} s")
    size = (target / "report.html").stat().st_size
    print(f"report.html {size / 1e6:.2f} MB in {target}")
    if args.keep is None:
        shutil.rmtree(target)


if __name__ == "__main__":
    main()
