"""Ballot hot paths, ours against the reference electionguard 1.4.0, on one core, in one run.

    python benchmarks/bench_ballots.py [-n 40] [--manifest PATH] [--out benchmarks/results]

The reference runs first as a subprocess under its Python 3.10 venv (tests/oracle_scripts/
bench_reference.py): it encrypts n ballots, validates them as its ballot box does before casting,
and accumulates them into a tally. It exports the manifest, context, plaintext and submitted ballots,
and ours then works on the very same data: encryption of the same plaintexts, batched validation of
the reference's submitted ballots, tally accumulation. Both are single-threaded and timed in process
CPU time (steadier than wall time on a shared machine). Writes a markdown table and JSON (and a PNG
bar chart if matplotlib is installed) under --out.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compute.ballot import PlaintextBallot, SubmittedBallot  # noqa: E402
from compute.context import ElectionContext  # noqa: E402
from compute.encrypt import encrypt_ballot  # noqa: E402
from compute.fixedbase import g_table, table_for  # noqa: E402
from compute.manifest import InternalManifest, Manifest  # noqa: E402
from compute.tally import accumulate, new_tally  # noqa: E402
from compute.validate import validate_ballots  # noqa: E402
from tests.oracle import run_oracle  # noqa: E402


def _load(p: Path) -> dict:
    return json.loads(p.read_text())


def run(n: int, manifest: str | None, out: Path, rounds: int = 3) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args: list[str] = [str(n), "--out", tmp, "--rounds", str(rounds)]
        if manifest:
            args += ["--manifest", manifest]
        t = time.perf_counter()
        ref = run_oracle("bench_reference.py", *args, timeout=7200)
        ref_wall = time.perf_counter() - t
        d = Path(tmp)
        m = Manifest.from_json(_load(d / "manifest.json"))
        internal = InternalManifest.from_manifest(m)
        context = ElectionContext.from_json(_load(d / "context.json"))
        plain = [PlaintextBallot.from_json(_load(p)) for p in sorted((d / "plaintext").glob("*.json"))]
        submitted = [SubmittedBallot.from_json(_load(p)) for p in sorted((d / "ballots").glob("*.json"))]

    clock = time.process_time
    t = clock()
    g_table()
    table_for(context.elgamal_public_key)
    tables_s = clock() - t  # once per worker and election key

    enc_s = val_s = tally_s = float("inf")
    for _ in range(rounds):  # minimum over rounds, as the reference script does
        seed = internal.manifest_hash
        t = clock()
        for p in plain:
            seed = encrypt_ballot(p, internal, context, seed).code
        enc_s = min(enc_s, clock() - t)

        t = clock()
        failures = validate_ballots(submitted, internal, context)
        val_s = min(val_s, clock() - t)
        assert not failures, failures

        t = clock()
        accumulate(new_tally(internal), submitted)
        tally_s = min(tally_s, clock() - t)

    ours = {
        "encrypt_s": enc_s,
        "validate_s": val_s,
        "tally_s": tally_s,
        "tables_s": tables_s,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    rows = []
    for name, key in (
        ("encryption", "encrypt_s"),
        ("validation (all proofs)", "validate_s"),
        ("tally accumulation", "tally_s"),
    ):
        r, o = ref[key], ours[key]
        rows.append(
            {
                "operation": name,
                "reference_ballots_per_s": n / r,
                "ours_ballots_per_s": n / o,
                "speedup": r / o,
            }
        )
    result = {
        "n": n,
        "rounds": rounds,
        "selections_per_ballot": ref["selections"],
        "manifest": manifest or "ElectionFactory.get_fake_manifest()",
        "reference": ref,
        "reference_wall_s": ref_wall,
        "ours": ours,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ballots.json").write_text(json.dumps(result, indent=1))
    lines = [
        f"# Ballot hot paths: {n} ballots, {ref['selections']} selection ciphertexts each "
        f"(one core, CPU time, best of {rounds})",
        "",
        "| operation | reference ballots/s | ours ballots/s | speedup |",
        "|---|---:|---:|---:|",
        *(
            f"| {r['operation']} | {r['reference_ballots_per_s']:.1f} | {r['ours_ballots_per_s']:.1f} "
            f"| {r['speedup']:.1f}x |"
            for r in rows
        ),
        "",
        f"Peak RSS: reference {ref['peak_rss_kb'] / 1024:.0f} MiB, ours {ours['peak_rss_kb'] / 1024:.0f} MiB "
        f"(fixed-base tables for g and K built once: {tables_s:.2f} s CPU).",
    ]
    (out / "bench_ballots.md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        xs = range(len(rows))
        ax.bar(
            [x - 0.2 for x in xs], [r["reference_ballots_per_s"] for r in rows], 0.4, label="reference 1.4.0"
        )
        ax.bar([x + 0.2 for x in xs], [r["ours_ballots_per_s"] for r in rows], 0.4, label="amarvote compute")
        ax.set_xticks(list(xs), [r["operation"] for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("ballots / s (one core)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "bench_ballots.png", dpi=120)
    except ImportError:
        pass
    print("\n".join(lines))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=40)
    ap.add_argument("--manifest", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--rounds", type=int, default=3, help="each time is the minimum over this many rounds")
    a = ap.parse_args()
    run(a.n, a.manifest, a.out, a.rounds)


if __name__ == "__main__":
    main()
