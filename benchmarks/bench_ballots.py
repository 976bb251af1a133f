"""The arithmetic core, ours against the reference electionguard 1.4.0, on one core, in one run.

    python benchmarks/bench_ballots.py [-n 40] [--rounds 3] [--manifest PATH] [--out benchmarks/results]
                                       [--decrypt-reps 2] [--decrypt-rounds 10] [--no-profile]
                                       [--no-production-batch]

The reference runs first as a subprocess under its Python 3.10 venv (tests/oracle_scripts/
bench_reference.py): a key ceremony (5 guardians, quorum 3), then it encrypts n ballots, validates them
as its ballot box does before casting, accumulates them into a tally, and on that tally times one
guardian's partial decryption share (Guardian.compute_tally_share) and one present guardian's
compensated share for a missing guardian (Guardian.compute_compensated_tally_share). It exports the
manifest, context, plaintext and submitted ballots, and ours then works on the very same data in this
process: encryption of the same plaintexts, batched validation of the reference's submitted ballots,
tally accumulation, validation again of one batch of our own encryptions as large as a tally chunk
task's (``VALIDATION_BATCH_SELECTIONS`` selections; the reference's rate is per ballot at any size, best
of 2), then our own key ceremony (5, 3: the keys differ, the costs do not depend on them)
and compute_decryption_share / compute_compensated_decryption_share of the same tally with workers=1.
Decryption is reported in ms per tally selection (placeholders are not in a tally).

Both sides are single-threaded and timed in process CPU time (steadier than wall time on a shared
machine), each figure the minimum over --rounds rounds (decryption: over --decrypt-rounds rounds of the
mean of --decrypt-reps calls; a tally has few selections, so one call is short). Peak RSS is the
process's peak so far, taken after the ballot operations and again after decryption. Unless
--no-profile, one more (untimed) round of our encryption, of our validation and of one partial
decryption runs under cProfile and the top functions by own time are
reported. Writes bench_ballots.{md,json,png} under --out.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compute.ballot import CiphertextBallot, PlaintextBallot, SubmittedBallot  # noqa: E402
from compute.context import ElectionContext  # noqa: E402
from compute.decryption import compute_compensated_decryption_share, compute_decryption_share  # noqa: E402
from compute.encrypt import encrypt_ballot  # noqa: E402
from compute.fixedbase import g_table, table_for  # noqa: E402
from compute.keyceremony import run_key_ceremony  # noqa: E402
from compute.manifest import InternalManifest, Manifest  # noqa: E402
from compute.tally import accumulate, new_tally  # noqa: E402
from compute.validate import VALIDATION_BATCH_SELECTIONS, validate_ballots  # noqa: E402
from tests.oracle import run_oracle  # noqa: E402

GUARDIANS, QUORUM = 5, 3


def _rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _load(p: Path) -> dict:
    return json.loads(p.read_text())


def _profile(fn: Callable[[], None], top: int = 10) -> dict:
    """Run fn() under cProfile: total CPU seconds and the top functions by own time, with their share."""
    prof = cProfile.Profile(time.process_time)
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values()) or 1.0
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.items():
        where = func if file == "~" else f"{Path(file).parent.name}/{Path(file).name}:{line} {func}"
        rows.append(
            {"function": where, "calls": ncalls, "own_s": tottime, "cum_s": cumtime, "share": tottime / total}
        )
    rows.sort(key=lambda r: -r["own_s"])
    return {"total_s": total, "top": rows[:top]}


def run(
    n: int,
    manifest: str | None,
    out: Path,
    rounds: int = 3,
    decrypt_reps: int = 2,
    decrypt_rounds: int = 10,
    profile: bool = True,
    production_batch: bool = True,
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        args: list[str] = [str(n), "--out", tmp, "--rounds", str(rounds), "--decrypt-reps", str(decrypt_reps)]
        args += [
            "--guardians",
            str(GUARDIANS),
            "--quorum",
            str(QUORUM),
            "--decrypt-rounds",
            str(decrypt_rounds),
        ]
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

    def encrypt_all() -> None:
        seed = internal.manifest_hash
        for p in plain:
            seed = encrypt_ballot(p, internal, context, seed).code

    def validate_all() -> None:
        failures = validate_ballots(submitted, internal, context)
        assert not failures, failures

    enc_s = val_s = tally_s = float("inf")
    for _ in range(rounds):  # minimum over rounds, as the reference script does
        t = clock()
        encrypt_all()
        enc_s = min(enc_s, clock() - t)

        t = clock()
        validate_all()
        val_s = min(val_s, clock() - t)

        t = clock()
        tally = accumulate(new_tally(internal), submitted)
        tally_s = min(tally_s, clock() - t)
    rss_ballots = _rss_kb()

    # Validation at the batch size a tally chunk task uses (VALIDATION_BATCH_SELECTIONS selections): the
    # reference checks ballot by ballot, so its rate above holds at any size; ours falls per ballot with
    # the batch (wider windows, a Jacobi symbol per bucket). Our own encryptions of the same plaintexts.
    big_s = float("inf")
    big: list[CiphertextBallot] = []
    if production_batch:
        per_ballot = sum(len(c.ballot_selections) for c in submitted[0].contests)
        seed = internal.manifest_hash
        while len(big) * per_ballot < VALIDATION_BATCH_SELECTIONS:
            big.append(encrypt_ballot(plain[len(big) % len(plain)], internal, context, seed))
            seed = big[-1].code
        for _ in range(2):
            t = clock()
            assert not validate_ballots(big, internal, context, batch_size=len(big))
            big_s = min(big_s, clock() - t)
    rss_big = _rss_kb()

    # Decryption of the same tally (same ballots) with our own guardians: 5, quorum 3, workers=1.
    t = clock()
    privates, records, our_context = run_key_ceremony(GUARDIANS, QUORUM, internal.manifest_hash)
    key_ceremony_s = clock() - t
    present, missing = privates[0], records[-1]
    tally_selections = sum(len(c.selections) for c in tally.contests.values())
    assert tally_selections == ref["tally_selections"], (tally_selections, ref["tally_selections"])
    partial_s = compensated_s = float("inf")
    for _ in range(decrypt_rounds):
        t = clock()
        for _ in range(decrypt_reps):
            compute_decryption_share(present, tally, our_context, workers=1)
        partial_s = min(partial_s, (clock() - t) / decrypt_reps)

        t = clock()
        for _ in range(decrypt_reps):
            compute_compensated_decryption_share(present, missing, tally, our_context, workers=1)
        compensated_s = min(compensated_s, (clock() - t) / decrypt_reps)
    rss_all = _rss_kb()

    ours = {
        "encrypt_s": enc_s,
        "validate_s": val_s,
        "tally_s": tally_s,
        "partial_s": partial_s,
        "compensated_s": compensated_s,
        "tables_s": tables_s,
        "key_ceremony_s": key_ceremony_s,
        "peak_rss_ballots_kb": rss_ballots,
        "peak_rss_kb": rss_all,
        "production_batch_ballots": len(big),
        "validate_production_batch_s": big_s,
        "peak_rss_production_batch_kb": rss_big,
    }
    rows = []

    def rate_row(name: str, r: float, o: float, ours_rss_kb: int) -> dict:
        return {
            "operation": name,
            "unit": "ballots/s",
            "reference": r,
            "ours": o,
            "ratio": o / r,
            "speedup": o / r,
            "ref_rss_kb": ref["peak_rss_ballots_kb"],
            "ours_rss_kb": ours_rss_kb,
        }

    for name, key in (
        ("encryption", "encrypt_s"),
        ("validation (all proofs, batched)", "validate_s"),
        ("tally accumulation", "tally_s"),
    ):
        rows.append(rate_row(name, n / ref[key], n / ours[key], rss_ballots))
    if big:
        name = f"validation, one batch of {len(big)} (a tally task's)"
        rows.insert(2, rate_row(name, n / ref["validate_s"], len(big) / big_s, rss_big))
    for name, key in (
        ("partial decryption (1 guardian)", "partial_s"),
        ("compensated decryption (1 for 1 missing)", "compensated_s"),
    ):
        r, o = 1000 * ref[key] / tally_selections, 1000 * ours[key] / tally_selections
        rows.append(
            {
                "operation": name,
                "unit": "ms/selection",
                "reference": r,
                "ours": o,
                "ratio": o / r,
                "speedup": r / o,
                "ref_rss_kb": ref["peak_rss_kb"],
                "ours_rss_kb": rss_all,
            }
        )

    prof = {}
    if profile:
        prof = {
            "encryption": {**_profile(encrypt_all), "what": f"{n} ballots"},
            "validation (batched)": {**_profile(validate_all), "what": f"{n} ballots"},
            "partial decryption": {
                **_profile(lambda: compute_decryption_share(present, tally, our_context, workers=1)),
                "what": f"one share of the {tally_selections}-selection tally",
            },
        }

    result = {
        "n": n,
        "rounds": rounds,
        "decrypt_reps": decrypt_reps,
        "guardians": GUARDIANS,
        "quorum": QUORUM,
        "selections_per_ballot": ref["selections"],
        "tally_selections": tally_selections,
        "manifest": manifest or "ElectionFactory.get_fake_manifest()",
        "reference": ref,
        "reference_wall_s": ref_wall,
        "ours": ours,
        "rows": rows,
        "profile": prof,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_ballots.json").write_text(json.dumps(result, indent=1))
    mib = 1024
    lines = [
        f"# Arithmetic core: {n} ballots, {ref['selections']} selection ciphertexts each, a tally of "
        f"{tally_selections} selections, {GUARDIANS} guardians, quorum {QUORUM} "
        f"(one core, CPU time, best of {rounds}; decryption best of {decrypt_rounds} rounds "
        f"of {decrypt_reps} calls)",
        "",
        "| operation | unit | reference | ours | ratio ours/reference | speedup "
        "| peak RSS reference | peak RSS ours |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['operation']} | {r['unit']} | {r['reference']:.{1 if r['reference'] >= 10 else 2}f} "
            f"| {r['ours']:.{1 if r['ours'] >= 10 else 2}f} "
            f"| {r['ratio']:.{1 if r['ratio'] >= 1 else 3}f} | {r['speedup']:.1f}x "
            f"| {r['ref_rss_kb'] / mib:.0f} MiB | {r['ours_rss_kb'] / mib:.0f} MiB |"
            for r in rows
        ),
        "",
        "Speedup: how many times faster ours is (ballots/s: ours/reference; ms/selection: reference/ours). "
        "Peak RSS: each process's peak so far, after its ballot operations and after decryption. "
        f"Fixed-base tables for g and K, built once per worker and key: {tables_s:.2f} s CPU. "
        f"Key ceremony ({GUARDIANS}, {QUORUM}): reference {ref['key_ceremony_s']:.2f} s, "
        f"ours {key_ceremony_s:.2f} s CPU (not in the table).",
    ]
    for phase, pr in prof.items():
        lines += [
            "",
            f"## Where our time goes: {phase}, {pr['what']}, cProfile, {pr['total_s']:.2f} s CPU under the "
            "profiler",
            "",
            "| function | calls | own time | share |",
            "|---|---:|---:|---:|",
            *(
                f"| `{r['function']}` | {r['calls']} | {r['own_s']:.3f} s | {100 * r['share']:.1f}% |"
                for r in pr["top"]
            ),
        ]
    (out / "bench_ballots.md").write_text("\n".join(lines) + "\n")
    if out.resolve() == (ROOT / "benchmarks" / "results").resolve():
        from readme import publish

        publish(out / "bench_ballots.md")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
        for ax, unit, ylabel in (
            (axes[0], "ballots/s", "ballots / s (one core, higher is better)"),
            (axes[1], "ms/selection", "ms / tally selection (lower is better)"),
        ):
            sel = [r for r in rows if r["unit"] == unit]
            xs = range(len(sel))
            ax.bar([x - 0.2 for x in xs], [r["reference"] for r in sel], 0.4, label="reference 1.4.0")
            ax.bar([x + 0.2 for x in xs], [r["ours"] for r in sel], 0.4, label="amarvote compute")
            for x, r in zip(xs, sel, strict=True):
                ax.annotate(
                    f"{r['speedup']:.1f}x", (x + 0.2, r["ours"]), ha="center", va="bottom", fontsize=8
                )
            ax.set_xticks(list(xs), [r["operation"].split(" (")[0] for r in sel], fontsize=8)
            if unit == "ballots/s":
                ax.set_yscale("log")  # decryption stays linear from 0: two bars per operation
            ax.set_ylabel(ylabel, fontsize=8)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{n} ballots, {GUARDIANS} guardians, quorum {QUORUM}, one core, CPU time", fontsize=9)
        fig.tight_layout()
        fig.savefig(out / "bench_ballots.png", dpi=120)
        plt.close(fig)
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
    ap.add_argument("--decrypt-reps", type=int, default=2, help="decryption calls per timed round")
    ap.add_argument("--decrypt-rounds", type=int, default=10, help="decryption times: minimum over these")
    ap.add_argument("--no-profile", action="store_true", help="skip the cProfile round")
    ap.add_argument(
        "--no-production-batch", action="store_true", help="skip validation at a tally task's batch size"
    )
    a = ap.parse_args()
    run(
        a.n,
        a.manifest,
        a.out,
        a.rounds,
        a.decrypt_reps,
        a.decrypt_rounds,
        not a.no_profile,
        not a.no_production_batch,
    )


if __name__ == "__main__":
    main()
