"""Run mongoeco's wire server on 127.0.0.1 (the tests' MongoDB emulator).

    python mongoeco_server.py PORT

Runs under the emulator's own interpreter (.tools/mongoeco-venv, Python >=
3.13), not the project's: tests/servers/mongodb.py starts it as a subprocess.
PORT 0 picks a free port. Prints ``ready PORT`` once it accepts connections,
then serves until SIGTERM/SIGINT.
"""

import asyncio
import signal
import sys

from mongoeco.wire import AsyncMongoEcoProxyServer


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncMongoEcoProxyServer(host="127.0.0.1", port=port) as server:
        print(f"ready {server.address.port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
