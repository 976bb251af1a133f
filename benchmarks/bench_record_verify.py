"""Whole-record verification of a reference-made record: the reference against ours, in one run (issue 21).

    python benchmarks/bench_record_verify.py [--ballots 100] [--guardians 5] [--quorum 3] [--missing 2]
                                             [--spoil-every 4] [--rounds 3] [--reference-rounds 1]
                                             [--batch N] [--record DIR] [--no-profile]
                                             [--out benchmarks/results]

The record: ``tests/oracle_scripts/make_election.py`` under the reference electionguard 1.4.0 (Python 3.10,
``tests/oracle.py``), made once and cached as the interop tests' ``reference_election`` is
(``tests/interop/conftest.py``: ``make_reference_election``), with --ballots ballots, every --spoil-every-th
spoiled, --guardians guardians of quorum --quorum and the last --missing missing at decryption (their shares
compensated). --record DIR verifies a record made elsewhere instead (ours only when it is not the
reference's: ``--rounds`` of ours and no reference time when --reference-rounds is 0).

Each verification runs in its own fresh process, single core, and is timed in process CPU time from the
first file read to the verdict (imports excluded), with the process's peak RSS:

- reference: ``tests/oracle_scripts/verify_record.py``, the reference's own functions making the checks ours
  makes (its docstring lists them: guardians' Schnorr proofs, joint key, commitment hash and base hashes;
  ``ballot_is_valid_for_election(should_validate=True)`` on every submitted ballot; the encrypted tally
  against the cast ballots' product; every share of the tally and of every spoiled ballot with
  ``CiphertextDecryptionSelection.is_valid`` (every Chaum-Pedersen proof, compensated parts' included),
  the recovery keys, the Lagrange reconstruction of the missing guardians' shares, g^tally and the
  shares' product; the coefficients). The reference has no record verifier of its own.
- ours: ``compute.verify.verify_source`` with workers=1 (what ``amarvote record verify --local`` runs, on
  one core), units of ``--batch`` ballots (default ``compute.verify.BATCH``, what the command passes; 0:
  ``compute.verify.unit_ballots``, the unit sized in selections); it makes those checks and also the
  clone, shared-code, layout and id checks.
- ours, Python multiexp: the same with ``compute.multiexp.native`` set to None (as
  ``benchmarks/bench_multiexp.py`` does), to show what the native routine brings.

Ours are alternated round by round (--rounds each, the minimum kept); the reference runs --reference-rounds
times (minimum kept). Both verdicts must be clean. The load average before and after goes in the result:
on a shared machine compare the ratios within one run. Then (unless --no-profile) a cProfile of ours
(one more process): the top functions by own time. Writes bench_record_verify.{md,json} under --out and
puts the table into benchmarks/README.md (``benchmarks/readme.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


# Where ours goes, by cumulative time of the functions that make each part of the check.
PHASES = {
    "read the ballot files (load_chunk)": ("verify.py", "load_chunk"),
    "parse them (parse_ballots)": ("verify.py", "parse_ballots"),
    "ballots' proofs (validate_ballots)": ("validate.py", "validate_ballots"),
    "share proofs (verify_shares)": ("chaum_pedersen.py", "verify_shares"),
    "Lagrange reconstructions (reconstruction_problems)": ("share_checks.py", "reconstruction_problems"),
    "guardians and context (header_problems)": ("verify.py", "header_problems"),
    "closing (RecordCheck.finish)": ("verify.py", "finish"),
}


def _child(mode: str, record: Path, batch: int) -> dict[str, Any]:
    """One of ours, in this (fresh) process: ``native``, ``python`` or ``profile``."""
    import compute.multiexp
    from compute.manifest import InternalManifest
    from compute.record import open_record, read_header
    from compute.verify import unit_ballots, verify_source

    if mode == "python":
        compute.multiexp.native = None
    profile = cProfile.Profile(time.process_time) if mode == "profile" else None  # CPU, not wall
    wall0, cpu0 = time.perf_counter(), time.process_time()
    with open_record(record) as source:
        if profile is not None:
            profile.enable()
        outcome = verify_source(source, batch or None, workers=1)
        if profile is not None:
            profile.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    with open_record(record) as source:  # after the timing: the unit's size, for the table
        header = read_header(source)
    out: dict[str, Any] = {
        "cpu_s": cpu,
        "wall_s": wall,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "ballots": outcome.ballots,
        "cast": outcome.cast,
        "spoiled": outcome.spoiled,
        "chunks": outcome.chunks,
        "problems": len(outcome.problems),
        "first_problems": outcome.problems[:5],
        "native": compute.multiexp.native is not None,
        "unit_ballots": batch or unit_ballots(InternalManifest.from_manifest(header.manifest)),
    }
    if profile is not None:
        stats = pstats.Stats(profile)
        total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:15]  # type: ignore[attr-defined]
        out["profile_total_s"] = total
        out["profile"] = [
            {
                "function": f"{Path(file).name}:{line}({name})" if line else name,
                "calls": v[1],
                "own_s": v[2],
                "cumulative_s": v[3],
            }
            for (file, line, name), v in rows
        ]
        out["phases"] = {
            phase: sum(v[3] for (file, _, name), v in stats.stats.items() if (Path(file).name, name) == key)  # type: ignore[attr-defined]
            for phase, key in PHASES.items()
        }
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats("cumulative").print_stats(25)
        out["profile_cumulative_text"] = buf.getvalue().replace(f"{ROOT}/", "")
    return out


def _run_ours(mode: str, record: Path, batch: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--record", str(record), "--batch", str(batch)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ours ({mode}) failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_reference(record: Path) -> dict[str, Any]:
    from tests.oracle import run_oracle

    out: dict[str, Any] = run_oracle("verify_record.py", record, timeout=7200)
    return out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _record(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    if args.record is not None:
        return args.record, {"made_by": "given"}
    from tests.interop.conftest import make_reference_election

    spec = ["--guardians", args.guardians, "--quorum", args.quorum, "--missing", args.missing]
    spec += ["--ballots", args.ballots, "--spoil-every", args.spoil_every]
    t0 = time.perf_counter()
    ref = make_reference_election(*map(str, spec))
    return ref.record_dir, {
        "made_by": "tests/oracle_scripts/make_election.py " + " ".join(map(str, spec)),
        "ready_s": time.perf_counter() - t0,
        "cast": len(ref.summary["cast_ballot_ids"]),
        "spoiled": len(ref.summary["spoiled_ballot_ids"]),
        "missing_guardians": ref.summary["missing_guardian_ids"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    record, made = _record(args)
    res: dict[str, Any] = {
        "record": made,
        "batch": args.batch,
        "cpus": os.cpu_count(),
        "load_before": _load(),
    }
    runs: dict[str, list[dict[str, Any]]] = {"native": [], "python": [], "reference": []}
    for i in range(max(args.rounds, args.reference_rounds)):
        if i < args.rounds:
            for mode in ("native", "python"):
                runs[mode].append(_run_ours(mode, record, args.batch))
                print(f"ours ({mode}) round {i + 1}: {runs[mode][-1]['cpu_s']:.2f} s", file=sys.stderr)
        if i < args.reference_rounds:
            runs["reference"].append(_run_reference(record))
            print(f"reference round {i + 1}: {runs['reference'][-1]['total_s']:.2f} s", file=sys.stderr)
    res["load_after"] = _load()
    for mode, items in runs.items():
        if not items:
            continue
        key = "total_s" if mode == "reference" else "cpu_s"
        if any(r["problems"] for r in items):
            raise RuntimeError(f"{mode}: the record does not verify: {items[0]['first_problems']}")
        best = min(items, key=lambda r: r[key])
        res[mode] = {
            **best,
            "times_s": [r[key] for r in items],
            "peak_rss_kb": max(r["peak_rss_kb"] for r in items),
        }
    if "reference" in res:
        res["ratio_reference_over_ours"] = res["reference"]["total_s"] / res["native"]["cpu_s"]
        res["ratio_reference_over_ours_python"] = res["reference"]["total_s"] / res["python"]["cpu_s"]
    res["native_speedup"] = res["python"]["cpu_s"] / res["native"]["cpu_s"]
    if args.profile:
        prof = _run_ours("profile", record, args.batch)
        res["profile"] = {
            k: prof[k] for k in ("cpu_s", "profile_total_s", "profile", "phases", "profile_cumulative_text")
        }
    return res


def _mib(kb: int) -> str:
    return f"{kb / 1024:.0f} MiB"


def markdown(res: dict[str, Any]) -> str:
    nat, py = res["native"], res["python"]
    made = res["record"]
    lines = [
        f"# Whole-record verification, {nat['ballots']} ballots "
        f"({nat['cast']} cast, {nat['spoiled']} spoiled)",
        "",
        f"Record: {made.get('made_by')}"
        + (
            f" (missing at decryption: guardians {', '.join(made['missing_guardians'])})"
            if "missing_guardians" in made
            else ""
        )
        + f". One core, process CPU time from the first file read to the verdict, a fresh process each; "
        f"ours: best of {len(nat['times_s'])}, units of {nat['unit_ballots']} ballots"
        + (" (`compute.verify.unit_ballots`)" if not res["batch"] else "")
        + f" "
        f"({nat['chunks']} chunk(s) and the tally's shares). Load average (1, 5, 15 min) before "
        f"{res['load_before']}, after {res['load_after']} ({res['cpus']} CPUs).",
        "",
        "| verifier | CPU time (s) | per ballot (ms) | peak RSS | reference / this |",
        "|---|---:|---:|---:|---:|",
    ]
    rows: list[tuple[str, float, int]] = []
    if "reference" in res:
        ref = res["reference"]
        rows.append(
            (
                f"reference electionguard 1.4.0 (`verify_record.py`; load {ref['load_s']:.2f} s, "
                f"checks {ref['check_s']:.2f} s)",
                ref["total_s"],
                ref["peak_rss_kb"],
            )
        )
    rows.append(("ours, `verify_source` (workers=1), native multiexp", nat["cpu_s"], nat["peak_rss_kb"]))
    rows.append(("ours, `verify_source` (workers=1), Python multiexp", py["cpu_s"], py["peak_rss_kb"]))
    for name, t, rss in rows:
        ratio = f"{res['reference']['total_s'] / t:.1f}x" if "reference" in res else "-"
        lines.append(f"| {name} | {t:.2f} | {t / nat['ballots'] * 1e3:.1f} | {_mib(rss)} | {ratio} |")
    lines += [
        "",
        f"The native multi-exponentiation's share: ours is {res['native_speedup']:.2f}x faster with it than "
        "with the Python one.",
    ]
    if "reference" in res:
        ref = res["reference"]
        lines.append(
            f"The reference checked {ref['tally_selections']} tally selections, {ref['spoiled_selections']} "
            f"spoiled-ballot selections and {ref['share_proofs']} share proofs."
        )
    if "profile" in res:
        prof = res["profile"]
        lines += [
            "",
            f"Where ours spends its time (cProfile, own time; {prof['profile_total_s']:.2f} s profiled, "
            f"{prof['cpu_s']:.2f} s CPU under the profiler). By part (cumulative):",
            "",
            "| part | seconds |",
            "|---|---:|",
            *(f"| {k} | {v:.2f} |" for k, v in prof["phases"].items()),
            "",
            "By function (own time):",
            "",
            "| function | calls | own (s) | cumulative (s) |",
            "|---|---:|---:|---:|",
        ]
        for r in prof["profile"][:12]:
            lines.append(f"| `{r['function']}` | {r['calls']} | {r['own_s']:.2f} | {r['cumulative_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from compute.verify import BATCH

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ballots", type=int, default=100)
    ap.add_argument("--guardians", type=int, default=5)
    ap.add_argument("--quorum", type=int, default=3)
    ap.add_argument("--missing", type=int, default=2)
    ap.add_argument("--spoil-every", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of ours (each path)")
    ap.add_argument("--reference-rounds", type=int, default=1)
    ap.add_argument(
        "--batch", type=int, default=BATCH, help="ours: ballots per unit (0: compute.verify.unit_ballots)"
    )
    ap.add_argument("--record", type=Path, default=None, help="verify this record instead of making one")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--child", choices=("native", "python", "profile"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.record, args.batch)))
        return
    res = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_record_verify.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "bench_record_verify.md").write_text(markdown(res))
    print(markdown(res))
    if args.out.resolve() == RESULTS.resolve():
        from readme import publish

        publish(RESULTS / "bench_record_verify.md")


if __name__ == "__main__":
    main()
