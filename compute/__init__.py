"""ElectionGuard 1.x arithmetic: pure functions on data, no I/O, importable on a bare Ray worker.

Everything stands on ``constants`` (the group) and ``group`` (its arithmetic). A decryption goes through
``decryption_target`` (what is decrypted), ``decryption`` (making shares), ``share_checks`` (checking
them) and ``decrypt_with_shares`` (combining, with ``discrete_log``); its layouts are in
``decryption_share`` and ``plaintext_tally``.
"""
