"""``make dev-distributed``: the product on "several hosts" on one machine, for developers.

Starts, all on 127.0.0.1 and all throwaway (their data goes when this stops):

- PostgreSQL (``tests/postgres_server.py``): Dagster's storage (database ``dagster``) and
  the warehouse (database ``warehouse``);
- Redis (``tests/redis_server.py``, Debian's ``redis-server``): the Celery broker and result
  backend;
- SeaweedFS (``tests/seaweedfs_server.py``, ``weed mini``): the artifact store, an S3 bucket;
- two Celery workers (``dagster-celery worker start``), ``host_a`` and ``host_b``, each with
  its own ``DAGSTER_HOME`` and ``DEFER_ORCH_HOME``: they share no disk. ``host_a`` also
  listens on Celery's default queue ``dagster`` (runs launched without a queue tag: the
  sensors' and the schedule's); a run tagged ``dagster-celery/queue: host_b`` runs on B;
- ``dagster dev`` (webserver and daemon) with ``DEFER_ORCH_EXECUTOR=celery``.

It prints where each of them is, then waits for ``dagster dev``; Ctrl-C stops everything.
The same recipe as ``tests/e2e/test_two_hosts.py``, which is what proves it works.

    python deploy/celery/dev_distributed.py [--dir DIR] [--port 3000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS = REPO_ROOT / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))
BIN = Path(sys.executable).parent
DAGSTER_YAML = Path(__file__).resolve().parent / "dagster.yaml"
WORKERS = {"host_a": ("host_a", "dagster"), "host_b": ("host_b",)}
BRANCH_POOL_LIMIT = 4


def say(message: str) -> None:
    print(f"dev-distributed: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev-distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".defer_orchestration" / "distributed",
                        help="homes, logs and the Dagster instance (emptied first)")
    parser.add_argument("--port", type=int, default=3000, help="the Dagster UI's port")
    args = parser.parse_args(argv)
    try:
        import dagster_celery  # noqa: F401
    except ImportError:
        say("dagster-celery is not installed: pip install -e '.[distributed]' -c constraints/newest.txt")
        return 2

    from celery_worker import CeleryWorker, worker_argv
    from postgres_server import postgres_server
    from redis_server import redis_server
    from seaweedfs_server import seaweedfs_server

    base = args.dir.absolute()
    shutil.rmtree(base, ignore_errors=True)
    (base / "logs").mkdir(parents=True)
    # PostgreSQL runs as the `postgres` OS user when we are root: its directory must be
    # reachable by it, which a checkout under /root is not. A temp dir is.
    servers = Path(tempfile.mkdtemp(prefix="defer_orch_dist_"))
    os.chmod(servers, 0o755)
    workers: list[CeleryWorker] = []
    dev: subprocess.Popen[bytes] | None = None
    with ExitStack() as stack:
        started = time.monotonic()
        pg = stack.enter_context(postgres_server(servers / "pg"))
        pg.create_database("dagster")
        redis = stack.enter_context(redis_server(servers / "redis"))
        s3 = stack.enter_context(seaweedfs_server(servers / "s3"))
        store = s3.url("defer-orchestration")
        env = {
            **os.environ, **pg.env(), **pg.dagster_env("dagster"), **s3.env(),
            "DEFER_ORCH_WAREHOUSE": "postgres",
            "DEFER_ORCH_ARTIFACT_STORE": store,
            "DEFER_ORCH_EXECUTOR": "celery",
            "DEFER_ORCH_CELERY_BROKER": redis.url(),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        dagster_home = base / "dagster_home"
        dagster_home.mkdir()
        shutil.copy(DAGSTER_YAML, dagster_home / "dagster.yaml")
        main_env = {**env, "DAGSTER_HOME": str(dagster_home), "DEFER_ORCH_HOME": str(base / "home_dagster")}
        subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "branch_builds",
                        str(BRANCH_POOL_LIMIT)], env=main_env, check=True, stdout=subprocess.DEVNULL)
        for name, queues in WORKERS.items():
            home = base / name
            (home / "dagster_home").mkdir(parents=True)
            shutil.copy(DAGSTER_YAML, home / "dagster_home" / "dagster.yaml")
            worker_env = {**env, "DAGSTER_HOME": str(home / "dagster_home"), "DEFER_ORCH_HOME": str(home / "home")}
            argv = worker_argv(BIN, name, queues[0])
            for extra in queues[1:]:
                argv[argv.index("--"):argv.index("--")] = ["-q", extra]
            log = base / "logs" / f"{name}.log"
            with open(log, "ab") as handle:
                proc = subprocess.Popen(argv, cwd=REPO_ROOT, env=worker_env, stdin=subprocess.DEVNULL,
                                        stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
            workers.append(CeleryWorker(name, queues[0], proc, log))
            stack.callback(workers[-1].stop)
        for worker in workers:
            worker.wait_ready()
        say(f"servers and workers up in {time.monotonic() - started:.0f} s")
        say(f"PostgreSQL  {pg.host}:{pg.port} user {pg.user} (Dagster: database dagster; warehouse: {pg.dbname}); "
            f"files in {servers / 'pg'}")
        say(f"Redis       redis://{redis.host}:{redis.port}/0 (password in DEFER_ORCH_CELERY_BROKER of the processes)")
        say(f"S3 store    {store} at {s3.endpoint} (SeaweedFS; AWS_* variables set for every process)")
        for name, queues in WORKERS.items():
            say(f"worker      {name}: queues {', '.join(queues)}; DEFER_ORCH_HOME {base / name / 'home'}; "
                f"log {base / 'logs' / (name + '.log')}")
        say(f"Dagster UI  http://127.0.0.1:{args.port} (DAGSTER_HOME {dagster_home}); launch a run on host_b "
            "with the tag dagster-celery/queue=host_b. Ctrl-C stops everything.")
        dev = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"), "-h", "127.0.0.1",
             "-p", str(args.port)], cwd=REPO_ROOT, env=main_env,
        )

        def forward(signum: int, _frame: object) -> None:
            if dev is not None:
                dev.send_signal(signum)

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches dagster dev from the terminal
        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGHUP, forward)
        code = dev.wait()
        say("dagster dev stopped; stopping the workers and servers")
    shutil.rmtree(servers, ignore_errors=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
