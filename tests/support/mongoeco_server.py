"""Run mongoeco's wire server on 127.0.0.1 (the tests' MongoDB emulator).

    python mongoeco_server.py PORT [DATA]

Runs under the emulator's own interpreter (.tools/mongoeco-venv, Python >=
3.13), not the project's: tests/support/servers/mongodb.py starts it as a subprocess.
PORT 0 picks a free port. With DATA (a file), the documents are kept in that
SQLite database (mongoeco's SQLite engine), and survive a restart; without
it they are kept in memory. Prints ``ready PORT`` once it accepts connections,
then serves until SIGTERM/SIGINT.
"""

import asyncio
import signal
import sys

from mongoeco.wire import AsyncMongoEcoProxyServer


async def main(port: int, data: str | None) -> None:
    engine = None
    if data is not None:
        from mongoeco.engines.sqlite import SQLiteEngine

        engine = SQLiteEngine(data)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncMongoEcoProxyServer(host="127.0.0.1", port=port, engine=engine) as server:
        print(f"ready {server.address.port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
