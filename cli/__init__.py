"""cli: the user's side of 20i telemetry: the ``20i telemetry`` commands and host integration.

Consent, precedence and paths (``consent``, ``environment``, ``state``), the host's one-line
integration and the period tally (``tracking``, ``tally``), and the commands (``app``,
``telemetry``). Imports nothing here: a host command pays only for the modules it uses, and
the off path must stay at one small file read. Never imports ``server_agg``.
"""
