"""The ElectionGuard 1.x standard group: p (4096 bits), q = 2^256 - 189, r = (p - 1) / q, g.

Elements are plain ``gmpy2.mpz`` values: no wrapper classes on the hot path. Hex follows the
reference package (upper case, padded to an even number of digits) because hashes are taken over it.
"""

from __future__ import annotations

import secrets

import gmpy2
from gmpy2 import mpz

# Long exponentiations release the GIL so that threads inside one Ray task run in parallel.
gmpy2.get_context().allow_release_gil = True

P: mpz = mpz(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    "93C467E37DB0C7A4D1BE3F810152CB56A1CECC3AF65CC0190C03DF34709AFFBD"
    "8E4B59FA03A9F0EED0649CCB621057D11056AE9132135A08E43B4673D74BAFEA"
    "58DEB878CC86D733DBE7BF38154B36CF8A96D1567899AAAE0C09D4C8B6B7B86F"
    "D2A1EA1DE62FF8643EC7C271827977225E6AC2F0BD61C746961542A3CE3BEA5D"
    "B54FE70E63E6D09F8FC28658E80567A47CFDE60EE741E5D85A7BD46931CED822"
    "0365594964B839896FCAABCCC9B31959C083F22AD3EE591C32FAB2C7448F2A05"
    "7DB2DB49EE52E0182741E53865F004CC8E704B7C5C40BF304C4D8C4F13EDF604"
    "7C555302D2238D8CE11DF2424F1B66C2C5D238D0744DB679AF2890487031F9C0"
    "AEA1C4BB6FE9554EE528FDF1B05E5B256223B2F09215F3719F9C7CCC69DDF172"
    "D0D6234217FCC0037F18B93EF5389130B7A661E5C26E54214068BBCAFEA32A67"
    "818BD3075AD1F5C7E9CC3D1737FB28171BAF84DBB6612B7881C1A48E439CD03A"
    "92BF52225A2B38E6542E9F722BCE15A381B5753EA842763381CCAE83512B3051"
    "1B32E5E8D80362149AD030AABA5F3A5798BB22AA7EC1B6D0F17903F4E22D8407"
    "34AA85973F79A93FFB82A75C47C03D43D2F9CA02D03199BACEDDD4533A52566A"
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
    16,
)
Q: mpz = mpz(2**256 - 189)
R: mpz = mpz((P - 1) // Q)
G: mpz = mpz(
    "1D41E49C477E15EAEEF0C5E4AC08D4A46C268CD3424FC01D13769BDB43673218"
    "587BC86C4C1448D006A03699F3ABAE5FEB19E296F5D143CC5E4A3FC89088C9F4"
    "523D166EE3AE9D5FB03C0BDD77ADD5C017F6C55E2EC92C226FEF5C6C1DF2E7C3"
    "6D90E7EAADE098241D3409983BCCD2B5379E9391FBC62F9F8D939D1208B16036"
    "7C134264122189595EC85C8CDBE5F9D307F46912C04932F8C16815A76B4682BD"
    "6BDC0ED52B00D8D30F59C731D5A7FFAE8165D53CF96649AAC2B743DA56F14F19"
    "DACC5236F29B1AB9F9BEFC69697293D5DEAD8B5BF5DE9BAB6DE67C45719E5634"
    "4A3CBDF3609824B1B578E34EAEB6DD3190AB3571D6D671C512282C1DA7BD36B4"
    "251D2584FADEA80B9E141423074DD9B5FB83ACBDEAD4C87A58FFF517F977A830"
    "80370A3B0CF98A1BC2978C47AAC29611FD6C40E2F9875C35D50443A9AA3F4961"
    "1DCD3A0D6FF3CB3FACF31471BDB61860B92C594D4E46569BB39FEEADFF1FD64C"
    "836A6D6DB85C6BA7241766B7AB56BF739633B054147F7170921412E948D9E474"
    "02D15BB1C257318612C121C36B80EB8433C08E7D0B7149E3AB0A8735A92EDCE8"
    "FF943E28A2DCEACFCC69EC318909CB047BE1C5858844B5AD44F22EEB289E4CC5"
    "54F7A5E2F3DEA026877FF92851816071CE028EB868D965CCB2D2295A8C55BD1C"
    "070B39B09AE06B37D29343B9D8997DC244C468B980970731736EE018BBADB987",
    16,
)

ONE = mpz(1)
ZERO = mpz(0)


def to_hex(x: int) -> str:
    """The reference's hex form of an element: upper case, even number of digits."""
    h = format(x, "02X")
    return "0" + h if len(h) % 2 else h


def from_hex(s: str) -> mpz:
    """Parse a hex element as the reference writes it (any case, optional leading zero)."""
    return mpz(s, 16) if s else ZERO


def to_bytes_p(x: int) -> bytes:
    """Fixed-width big-endian bytes of an element of Z_p (512 bytes): the compact storage form."""
    return int(x).to_bytes(512, "big")


def to_bytes_q(x: int) -> bytes:
    """Fixed-width big-endian bytes of an element of Z_q (32 bytes)."""
    return int(x).to_bytes(32, "big")


def from_bytes(b: bytes) -> mpz:
    return mpz(int.from_bytes(b, "big"))


def in_q(x: int) -> bool:
    return 0 <= x < Q


def in_p(x: int) -> bool:
    return 0 <= x < P


def is_valid_residue(x: int) -> bool:
    """Membership of the order-q subgroup, as the reference checks it (one full exponentiation)."""
    return 0 <= x < P and gmpy2.powmod(x, Q, P) == 1


def add_q(*xs: int) -> mpz:
    return mpz(sum(xs)) % Q


def sub_q(a: int, b: int) -> mpz:
    return mpz(a - b) % Q


def a_plus_bc_q(a: int, b: int, c: int) -> mpz:
    return mpz(a + b * c) % Q


def mult_q(*xs: int) -> mpz:
    acc = ONE
    for x in xs:
        acc = acc * x % Q
    return acc


def mult_p(*xs: int) -> mpz:
    acc = ONE
    for x in xs:
        acc = acc * x % P
    return acc


def pow_p(b: int, e: int) -> mpz:
    return gmpy2.powmod(b, e, P)


def inv_p(x: int) -> mpz:
    return gmpy2.invert(x, P)


def inv_q(x: int) -> mpz:
    return gmpy2.invert(x, Q)


def div_q(a: int, b: int) -> mpz:
    return a * gmpy2.invert(b, Q) % Q


def g_pow_p(e: int) -> mpz:
    """g^e mod p through the generator's fixed-base table (compute.fixedbase, built on first use)."""
    from compute.fixedbase import g_pow  # late import: fixedbase needs this module's constants

    return g_pow(e)


def rand_q() -> mpz:
    return mpz(secrets.randbelow(Q))


def rand_range_q(start: int) -> mpz:
    """A uniform random element of [start, q), as the reference draws secret keys."""
    return mpz(start + secrets.randbelow(Q - start))
