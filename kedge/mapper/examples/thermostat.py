"""A simulated thermostat mapper.

    python -m kedge.mapper.examples.thermostat --device NS/NAME --credentials OUTDIR \\
        --broker mqtts://127.0.0.1:P [--interval 1.0]

Model it expects (DeviceModel properties): ``target-temperature`` (INT, ReadWrite) and
``temperature`` (FLOAT, ReadOnly). It applies the desired target as soon as it arrives
and reports it back, and every ``--interval`` reports a temperature that drifts toward
the target. Prints one JSON line per event on stdout (tests read them).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from kedge.mapper import Mapper

STATE_HEARTBEAT_S = 30.0  # how often "online" is re-reported while running


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="thermostat", description="simulated thermostat mapper")
    p.add_argument("--device", required=True, help="NAMESPACE/NAME")
    p.add_argument("--credentials", required=True, help="dir with device.crt, device.key, ca.crt")
    p.add_argument("--broker", required=True, help="mqtts://127.0.0.1:PORT")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    p.add_argument("--initial", type=float, default=18.0, help="starting temperature")
    args = p.parse_args(argv)
    if not 0.05 <= args.interval <= 3600:
        p.error("--interval must be 0.05..3600")

    state = {"target": None, "temp": args.initial}
    lock = threading.Lock()
    stop = threading.Event()

    def emit(event: str, **kw) -> None:
        print(json.dumps({"event": event, **kw}), flush=True)

    def on_desired(values: dict[str, str]) -> None:
        target = values.get("target-temperature")
        if target is None:
            return
        with lock:
            state["target"] = target
        emit("desired", target=target)
        mapper.report({"target-temperature": target})

    mapper = Mapper(args.device, args.credentials, args.broker, on_desired=on_desired)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    mapper.start()
    if not mapper.connected.wait(15):
        emit("error", reason="could not connect to the broker")
        return 1
    emit("connected")
    mapper.report_state("online")  # the SDK re-sends it once the edge knows the device
    last_state = time.monotonic()
    while not stop.wait(args.interval):
        now = time.monotonic()
        if now - last_state >= STATE_HEARTBEAT_S:  # a heartbeat, as KubeEdge mappers report state
            mapper.report_state("online")
            last_state = now
        with lock:
            if state["target"] is not None:
                state["temp"] += (float(state["target"]) - state["temp"]) * 0.5
            reading = f"{state['temp']:.1f}"
        mapper.report({"temperature": reading})
        emit("reported", temperature=reading)
    mapper.report_state("offline")
    mapper.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
