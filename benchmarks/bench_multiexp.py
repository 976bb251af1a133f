"""The multi-exponentiation alone: the Python implementation against the native one, in one run.

    python benchmarks/bench_multiexp.py [--terms 100,1000,4000] [--bits 64,256] [--rounds 3]
                                        [--fixedbase-windows 8,10,12,13,14] [--encrypt-ballots 40]
                                        [--ballots 256] [--batch-sizes 64,256] [--out benchmarks/results]

For each number of terms and exponent length: random elements of Z_p^* as bases, random exponents of that
many bits, then ``compute.multiexp.multiexp_python`` and the native routine (``compute._multiexp``, what
``compute.multiexp.multiexp`` calls when it is built) on the same inputs, alternated round by round so that
both see the same machine; each time is the minimum over --rounds rounds of process CPU time. Also a
4,096-bit multiply-and-reduce through gmpy2 (``a * b % p``) for scale, and the cost model's multiplies
(``compute.multiexp.multiplies``), to give microseconds per multiply. Both results are checked equal.
Then ``validate_ballots`` on --ballots ballots of the tests' two-contest manifest (10 selections each,
tests/compute/ballot_helpers.py) at each batch size, with ``compute.multiexp.multiexp`` on its native
routine and on its Python one (the module's ``native`` set to None), alternated, in ms per ballot.

Fixed-base tables (``compute.fixedbase.FixedBaseTable``) at each of --fixedbase-windows: build time and one
exponentiation by a random exponent mod q, Python table against native table, and what each table's entries
take in memory (the native one trims its top row to 256 bits); then ``encrypt_ballot`` on --encrypt-ballots
ballots of the same manifest with ``ENCRYPTION_WINDOW`` tables Python against native (``compute.fixedbase``'s
``native`` set to None and the caches emptied for the Python run; tables built before timing), alternated.
Writes bench_multiexp.{md,json} under --out.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gmpy2 import mpz  # noqa: E402

import compute.fixedbase  # noqa: E402
import compute.multiexp  # noqa: E402
from compute.constants import P, Q  # noqa: E402
from compute.encrypt import encrypt_ballot  # noqa: E402
from compute.fixedbase import ENCRYPTION_WINDOW, FixedBaseTable, encryption_pow  # noqa: E402
from compute.multiexp import MAX_WINDOW, choose_window, multiexp_python, multiplies, native  # noqa: E402
from compute.validate import validate_ballots  # noqa: E402
from tests.compute.ballot_helpers import make_election, plaintext, submitted_ballots  # noqa: E402


def _cpu(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def _mulmod_us(reps: int = 20000) -> float:
    a, b = mpz(secrets.randbelow(int(P))), mpz(secrets.randbelow(int(P)))

    def loop() -> None:
        x = a
        for _ in range(reps):
            x = x * b % P

    return min(_cpu(loop)[0] for _ in range(3)) / reps * 1e6


def validation(ballots: int, batch_sizes: list[int], rounds: int) -> list[dict]:
    e = make_election()
    submitted = submitted_ballots(e, ballots)
    rows = []
    for batch in batch_sizes:
        times: dict[str, list[float]] = {"native": [], "python": []}
        for _ in range(rounds):
            for path in ("native", "python"):
                compute.multiexp.native = native if path == "native" else None
                try:
                    t, failures = _cpu(lambda b=batch: validate_ballots(submitted, e.internal, e.context, b))
                finally:
                    compute.multiexp.native = native
                assert failures == [], failures
                times[path].append(t)
        rows.append(
            {
                "ballots": ballots,
                "batch": batch,
                "python_ms_per_ballot": min(times["python"]) / ballots * 1e3,
                "native_ms_per_ballot": min(times["native"]) / ballots * 1e3,
                "speedup": min(times["python"]) / min(times["native"]),
            }
        )
        print(rows[-1], file=sys.stderr)
    return rows


def fixed_base(windows: list[int], rounds: int, pows: int = 300) -> list[dict]:
    if compute.fixedbase.native is None:
        raise SystemExit("compute._multiexp is not built: pip install -e . (needs libgmp-dev and gcc)")
    base = mpz(secrets.randbelow(int(P) - 1) + 1)
    exps = [mpz(secrets.randbelow(int(Q))) for _ in range(pows)]
    rows = []
    for w in windows:
        build: dict[bool, float] = {}
        times: dict[bool, list[float]] = {False: [], True: []}
        nbytes: dict[bool, int] = {}
        results: dict[bool, list[mpz]] = {}
        for use_native in (False, True):
            t, table = _cpu(lambda w=w, n=use_native: FixedBaseTable(base, w, use_native=n))
            assert isinstance(table, FixedBaseTable) and (table.native is not None) == use_native
            build[use_native], nbytes[use_native] = t, table.nbytes()
            results[use_native] = [table.pow(e) for e in exps]
            for _ in range(rounds):
                times[use_native].append(_cpu(lambda table=table: [table.pow(e) for e in exps])[0])
            del table
        assert results[False] == results[True], w
        rows.append(
            {
                "window": w,
                "multiplies": -(-256 // w) - 1,
                "python_build_s": build[False],
                "native_build_s": build[True],
                "python_us": min(times[False]) / pows * 1e6,
                "native_us": min(times[True]) / pows * 1e6,
                "speedup": min(times[False]) / min(times[True]),
                "python_mib": nbytes[False] / 2**20,
                "native_mib": nbytes[True] / 2**20,
            }
        )
        print(rows[-1], file=sys.stderr)
    return rows


def _encryption_tables(use_native: bool, k: int) -> None:
    """Empty compute.fixedbase's caches and build the encryption tables on the chosen path."""
    fb = compute.fixedbase
    fb.native = compute.multiexp.native if use_native else None
    fb._cache.clear()
    fb._enc_g = fb._enc_last = None
    encryption_pow(fb.G, 1)
    encryption_pow(k, 1)


def encryption(ballots: int, rounds: int) -> dict:
    e = make_election()
    choices = [{"contest-1": ["Ann"], "council": ["council-0", "council-9"]}, {"council": ["council-2"]}]
    plain = [plaintext(f"b-{i}", choices[i % 2]) for i in range(ballots)]
    k = e.context.elgamal_public_key
    times: dict[str, list[float]] = {"native": [], "python": []}
    codes: dict[str, list[mpz]] = {}
    try:
        for _ in range(rounds):
            for path in ("python", "native"):
                _encryption_tables(path == "native", k)

                def encrypt_all() -> list[mpz]:
                    return [
                        encrypt_ballot(p, e.internal, e.context, mpz(7), mpz(11), timestamp=1).code
                        for p in plain
                    ]

                t, out = _cpu(encrypt_all)
                times[path].append(t)
                codes[path] = out  # type: ignore[assignment]
    finally:
        _encryption_tables(True, k)
    assert codes["python"] == codes["native"]
    return {
        "ballots": ballots,
        "window": ENCRYPTION_WINDOW,
        "python_ms_per_ballot": min(times["python"]) / ballots * 1e3,
        "native_ms_per_ballot": min(times["native"]) / ballots * 1e3,
        "speedup": min(times["python"]) / min(times["native"]),
    }


def run(terms: list[int], bits: list[int], rounds: int) -> dict:
    if native is None:
        raise SystemExit("compute._multiexp is not built: pip install -e . (needs libgmp-dev and gcc)")
    rows = []
    for n in terms:
        for b in bits:
            bases = [mpz(secrets.randbelow(int(P) - 1) + 1) for _ in range(n)]
            exps = [secrets.randbits(b) for _ in range(n)]
            t_py, t_nat = [], []
            for _ in range(rounds):
                t, want = _cpu(lambda bases=bases, exps=exps: multiexp_python(bases, exps))
                t_py.append(t)
                t, got = _cpu(lambda bases=bases, exps=exps: native.multiexp(bases, exps, P, 0, MAX_WINDOW))
                t_nat.append(t)
                assert got == want, (n, b)
            mults = multiplies(exps)
            rows.append(
                {
                    "terms": n,
                    "bits": b,
                    "window": choose_window(exps),
                    "multiplies": round(mults),
                    "python_ms": min(t_py) * 1e3,
                    "native_ms": min(t_nat) * 1e3,
                    "python_us_per_multiply": min(t_py) / mults * 1e6,
                    "native_us_per_multiply": min(t_nat) / mults * 1e6,
                    "speedup": min(t_py) / min(t_nat),
                }
            )
            print(rows[-1], file=sys.stderr)
    return {"rounds": rounds, "mulmod_us": _mulmod_us(), "rows": rows}


def markdown(res: dict) -> str:
    lines = [
        "# Multi-exponentiation mod p (4096 bits): Python against native "
        f"(CPU time, best of {res['rounds']})",
        "",
        "| terms | exponent bits | window | multiplies (model) | Python (ms) | native (ms) "
        "| Python µs/multiply | native µs/multiply | speedup |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['terms']:,} | {r['bits']} | {r['window']} | {r['multiplies']:,} | {r['python_ms']:.1f} "
            f"| {r['native_ms']:.1f} | {r['python_us_per_multiply']:.2f} | {r['native_us_per_multiply']:.2f} "
            f"| {r['speedup']:.2f}x |"
        )
    lines += [
        "",
        f"One multiply-and-reduce through gmpy2 (`a * b % p`, 4096 bits) in the same run: "
        f"{res['mulmod_us']:.2f} µs.",
    ]
    if res.get("validation"):
        lines += [
            "",
            "`validate_ballots` (tests' two-contest manifest, 10 selections a ballot), CPU ms a ballot:",
            "",
            "| ballots | batch size | Python multiexp | native multiexp | speedup |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in res["validation"]:
            lines.append(
                f"| {r['ballots']} | {r['batch']} | {r['python_ms_per_ballot']:.2f} "
                f"| {r['native_ms_per_ballot']:.2f} | {r['speedup']:.2f}x |"
            )
    if res.get("fixed_base"):
        lines += [
            "",
            "Fixed-base tables (`compute.fixedbase.FixedBaseTable`), one exponentiation by a random "
            "exponent mod q (CPU µs), build (CPU s) and the entries' memory:",
            "",
            "| window | multiplies | Python build | native build | Python µs | native µs | speedup "
            "| Python MiB | native MiB |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in res["fixed_base"]:
            lines.append(
                f"| {r['window']} | {r['multiplies']} | {r['python_build_s']:.2f} "
                f"| {r['native_build_s']:.2f} | {r['python_us']:.1f} | {r['native_us']:.1f} "
                f"| {r['speedup']:.2f}x | {r['python_mib']:.1f} | {r['native_mib']:.1f} |"
            )
    if res.get("encryption"):
        r = res["encryption"]
        lines += [
            "",
            f"`encrypt_ballot` on {r['ballots']} ballots ({r['window']}-bit tables), CPU ms a ballot: "
            f"Python tables {r['python_ms_per_ballot']:.2f}, native tables {r['native_ms_per_ballot']:.2f} "
            f"({r['speedup']:.2f}x).",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--terms", default="100,1000,4000")
    ap.add_argument("--bits", default="64,256")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ballots", type=int, default=256, help="for validate_ballots; 0 skips it")
    ap.add_argument("--batch-sizes", default="64,256")
    ap.add_argument("--fixedbase-windows", default="8,10,12,13,14", help="empty skips them")
    ap.add_argument("--encrypt-ballots", type=int, default=40, help="0 skips encryption")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    res = run([int(t) for t in args.terms.split(",")], [int(b) for b in args.bits.split(",")], args.rounds)
    if args.ballots:
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        res["validation"] = validation(args.ballots, sizes, args.rounds)
    if args.fixedbase_windows:
        res["fixed_base"] = fixed_base([int(w) for w in args.fixedbase_windows.split(",")], args.rounds)
    if args.encrypt_ballots:
        res["encryption"] = encryption(args.encrypt_ballots, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_multiexp.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "bench_multiexp.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
