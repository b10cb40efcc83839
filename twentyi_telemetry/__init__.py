"""twentyi_telemetry: what a host CLI imports to count its commands for 20i telemetry.

The one import name hosts use, unique to this distribution, so a host's own ``cli``, ``ldp``
or ``state`` module can never shadow ours. Everything a host command runs lives in this
package and imports only the standard library and ``platformdirs``: the environment switches,
the consent decision, the append-only period journal and the start of the detached worker.
Building, sealing, spooling and sending happen in that worker (``cli.sender``, run in
isolated mode), never in the host process. Integrate with a guarded import, so the host works
unchanged when this package is not installed::

    try:
        from twentyi_telemetry import instrument
    except ImportError:  # telemetry is optional
        instrument = None
"""

from twentyi_telemetry.tracking import default_error_category, instrument, record

__all__ = ["default_error_category", "instrument", "record"]
