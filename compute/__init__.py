"""ElectionGuard 1.x arithmetic: pure functions on data, importable on a bare Ray worker.

No I/O, but for ``record``: the reference's election-record layout is files, and reading and writing it is
the one place this package touches them (names checked, paths kept inside their folder).

Everything stands on ``constants`` (the group) and ``group`` (its arithmetic). A decryption goes through
``decryption_target`` (what is decrypted), ``decryption`` (making shares), ``share_checks`` (checking
them) and ``decrypt_with_shares`` (combining, with ``discrete_log``); its layouts are in
``decryption_share`` and ``plaintext_tally``.
"""
