"""A real `specc serve` process on a free loopback port, for the serving tests and bench/serve.py."""
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Server:
    """`python -m specc serve RUN --port 0 ARGS`, started and waited for; `.url` once it listens."""

    def __init__(self, run, *args, env=None):
        full_env = dict(os.environ, NO_COLOR="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "specc", "serve", str(run), "--port", "0", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                                     cwd=ROOT)
        self.lines: list[str] = []
        self.errors: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True).start()
        first = self.proc.stdout.readline()  # the URL line, once the socket listens
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True).start()
        found = re.search(r"at (http://\S+)", first)
        if not found:
            self.proc.kill()
            self.proc.wait()
            time.sleep(0.2)
            raise RuntimeError(f"the server did not start: {first!r}\n{''.join(self.errors)}")
        self.url, self.banner = found.group(1), first.strip()
        self.host, self.port = self.url[len("http://"):].rsplit(":", 1)

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Send `sig`; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
