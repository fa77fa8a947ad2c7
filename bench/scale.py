"""History at scale: databases seeded with 1M and 10M drawings, read through the gateway.

Each scale gets a database of its own on the bench PostgreSQL, created at migration 0004 (the
schema before the kept figures) and seeded in SQL (generate_series: no Python row loop), with what
a live history of that size holds: every drawing with its model input, a live prediction by
version 1 and a rescore prediction by version 2 (one in ten read differently), a label on one in
a hundred, the rescore job with an item per drawing, and the two promotions. Then it is migrated
to head (migration 0005 fills the kept figures from those rows, 0006 keeps the flips of the
ledger's comparisons: each timed), analysed, and
history-service and the gateway are started on it to measure, under a few concurrent readers,
every read the models panel and the CLI make; `mnistream status`; and the rescore planner
planning a job over every drawing into a bench topic, in a process of its own (peak RSS, time).
The bytes a drawing costs are measured per table; MinIO's and Kafka's from real drawings and
events. The database is dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from history_service.migrate import upgrade
from mnistream_common.events import ClientInfo, DigitPredicted, DigitSubmitted, ModelRef, Timings
from mnistream_common.preprocessing import PREPROCESSING_VERSION, prepare
from mnistream_common.settings import S3Settings
from mnistream_common.storage import ObjectStore, delete_all, make_minio
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench import config
from bench.inputs import Drawings
from bench.stack import BIN, BenchError, Services, gateway_url, history_url
from bench.stats import percentile
from bench.upkeep import upkeep

READERS = 4
READS_PER_READER = 40
JOB = uuid.UUID("00000000-0000-4000-8000-00000000b0b0")
TASKS_TOPIC = "bench.scale.rescore.tasks"
PLAN_CHUNK = 500
# Bytes of record framing Kafka adds to each record in a batch (v2 format, small keys).
KAFKA_RECORD_OVERHEAD = 70
TABLES = ("drawings", "predictions", "labels", "rescore_job_items", "rescore_jobs")


def _seed_sql() -> list[str]:
    """The statements that fill a 0004 database with :n drawings (bound as a parameter)."""
    timings = '{"queue_ms": 3.1, "preprocess_ms": 0.0, "inference_ms": 0.42, "batch_size": 24}'
    probabilities = "'{0.01,0.01,0.01,0.01,0.01,0.01,0.01,0.91,0.01,0.01}'"
    read_v1 = "abs(hashtext(d.digit_id::text)) % 10"
    differs = "abs(hashtext(d.digit_id::text || 'v2')) % 10 = 0"
    return [
        "INSERT INTO drawings (digit_id, submitted_at, media_type, width, height, size_bytes, "
        "image_bucket, image_key, image_sha256, client_source, event_id, model_input, "
        "preprocessing_version) "
        "SELECT gen_random_uuid(), now() - make_interval(secs => i), 'image/png', 280, 280, "
        ":size, 'drawings', 'seeded', repeat('ab', 32), 'web', gen_random_uuid(), :input, :pv "
        "FROM generate_series(1, :n) AS i",
        "INSERT INTO predictions (digit_id, model_version, model_name, model_sha256, "
        "predicted_digit, confidence, probabilities, kind, kind_rank, job_id, worker_id, provider, "
        "timings, predicted_at, event_id) "
        f"SELECT d.digit_id, 1, 'mnist-digits', repeat('cd', 32), {read_v1}, 0.91, "
        f"{probabilities}, 'live', 0, NULL, 'bench-inference-0', 'CPUExecutionProvider', "
        f"'{timings}', d.submitted_at, gen_random_uuid() FROM drawings d",
        "INSERT INTO predictions (digit_id, model_version, model_name, model_sha256, "
        "predicted_digit, confidence, probabilities, kind, kind_rank, job_id, worker_id, provider, "
        "timings, predicted_at, event_id) "
        f"SELECT d.digit_id, 2, 'mnist-digits', repeat('ef', 32), "
        f"CASE WHEN {differs} THEN ({read_v1} + 1) % 10 ELSE {read_v1} END, 0.93, "
        f"{probabilities}, 'rescore', 1, :job, 'bench-rescore-0', 'CPUExecutionProvider', "
        f"'{timings}', now(), gen_random_uuid() FROM drawings d",
        "INSERT INTO labels (digit_id, label, labeled_at, event_id) "
        f"SELECT d.digit_id, {read_v1}, now(), gen_random_uuid() FROM drawings d "
        "WHERE abs(hashtext(d.digit_id::text || 'label')) % 100 = 0",
        "INSERT INTO rescore_job_items (job_id, digit_id) SELECT :job, digit_id FROM drawings",
        "INSERT INTO rescore_jobs (job_id, kind, model_version, total, started_at, updated_at) "
        "VALUES (:job, 'rescore', 2, :n, now(), now())",
        "INSERT INTO promotions (event_id, model_name, version, previous_version, sha256, "
        "onnx_uri, architecture, metrics, promoted_by, reason, promoted_at) VALUES "
        "(gen_random_uuid(), 'mnist-digits', 1, NULL, repeat('cd', 32), 's3://mlflow/v1.onnx', "
        "'mlp', '{}', 'bench', 'first', now() - interval '1 day'), "
        "(gen_random_uuid(), 'mnist-digits', 2, 1, repeat('ef', 32), 's3://mlflow/v2.onnx', "
        "'cnn', '{}', 'bench', 'second', now())",
    ]


def scale_database_url(drawings: int | str) -> str:
    """The bench PostgreSQL's database for one scale (or one step, by name)."""
    base = config.stack_env()["DATABASE_URL"]
    return make_url(base).set(database=f"scale_{drawings}").render_as_string(hide_password=False)


async def _admin(*statements: str) -> None:
    """Run statements on the bench PostgreSQL's own database, outside a transaction."""
    admin = create_async_engine(config.stack_env()["DATABASE_URL"], isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await admin.dispose()


async def drop_database(url: str) -> None:
    """Remove one scale's database (its disk is needed for the next)."""
    await _admin(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


async def seed(url: str, drawings: int, sample: Drawings) -> dict[str, float]:
    """A 0004 database holding `drawings` drawings; seconds per step."""
    name = make_url(url).database
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    await asyncio.to_thread(upgrade, url, "0004")
    model_input = sample.model_inputs[0]
    size = round(sample.mean_bytes)
    params = {
        "n": drawings,
        "input": model_input,
        "pv": PREPROCESSING_VERSION,
        "job": JOB,
        "size": size,
    }
    engine = create_async_engine(url)
    seconds: dict[str, float] = {}
    try:
        started = time.monotonic()
        async with engine.begin() as connection:
            for statement in _seed_sql():
                clause = text(statement)
                await connection.execute(
                    clause, {k: v for k, v in params.items() if f":{k}" in statement}
                )
        seconds["seed_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        await asyncio.to_thread(upgrade, url, "0005")
        seconds["migration_0005_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        await asyncio.to_thread(upgrade, url)
        seconds["migration_0006_s"] = round(time.monotonic() - started, 1)
        started = time.monotonic()
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            await connection.execute(text("VACUUM ANALYZE"))
        seconds["vacuum_analyze_s"] = round(time.monotonic() - started, 1)
    finally:
        await engine.dispose()
    return seconds


async def table_bytes(url: str) -> dict[str, int]:
    """Bytes on disk of every history table (with its indexes and TOAST)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r'"
                )
            )
            return {name: int(size) for name, size in rows.all()}
    finally:
        await engine.dispose()


async def old_read_s(url: str) -> float:
    """How long the figures of /api/models/2 took before they were kept: the agreement of v2
    with v1, computed from the prediction rows (the heart of the old read)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            started = time.monotonic()
            await connection.execute(
                text(
                    "SELECT count(*), "
                    "count(*) FILTER (WHERE o.predicted_digit = n.predicted_digit) "
                    "FROM predictions n JOIN predictions o "
                    "ON o.digit_id = n.digit_id AND o.model_version = 1 WHERE n.model_version = 2"
                )
            )
            return round(time.monotonic() - started, 3)
    finally:
        await engine.dispose()


READS = {
    "GET /api/models": "/api/models",
    "GET /api/models/2": "/api/models/2",
    "GET /api/models/2?flips_limit=0 (models panel)": "/api/models/2?flips_limit=0",
    "GET /api/models/2 (flips page 2)": "",  # the cursor of page 1, filled in at run time
    "GET /api/rescore-jobs": "/api/rescore-jobs",
    "GET /api/digits?limit=50": "/api/digits?limit=50",
}


async def reads() -> dict[str, dict[str, float]]:
    """p50/p99 (ms) of each read, READERS clients at once, READS_PER_READER requests each."""
    async with httpx.AsyncClient(base_url=gateway_url(), timeout=60) as client:
        first = (await client.get("/api/models/2", params={"flips_limit": 50})).json()
        paths = dict(READS)
        paths["GET /api/models/2 (flips page 2)"] = (
            f"/api/models/2?flips_limit=50&flips_before={first['flips_next']}"
        )
        measured: dict[str, dict[str, float]] = {}
        for name, path in paths.items():
            await client.get(path)  # warm: connection, plan cache

            async def reader(path: str = path) -> list[float]:
                took = []
                for _ in range(READS_PER_READER):
                    started = time.perf_counter()
                    answer = await client.get(path)
                    took.append((time.perf_counter() - started) * 1000)
                    if answer.status_code != 200:
                        raise BenchError(f"{path}: {answer.status_code} {answer.text[:200]}")
                return took

            samples = [
                t for r in await asyncio.gather(*(reader() for _ in range(READERS))) for t in r
            ]
            measured[name] = {
                "p50_ms": round(percentile(samples, 50), 1),
                "p99_ms": round(percentile(samples, 99), 1),
                "requests": len(samples),
            }
    return measured


def status_runs(runs: int = 5) -> dict[str, Any]:
    """Wall time of `mnistream status`, as an operator runs it (a fresh process each time)."""
    took = []
    for _ in range(runs):
        started = time.monotonic()
        result = subprocess.run(
            [str(BIN / "mnistream"), "status"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": "200"},
            check=False,
        )
        took.append(time.monotonic() - started)
        if result.returncode != 0:
            raise BenchError(f"mnistream status failed:\n{result.stdout}\n{result.stderr}")
    return {"median_s": round(percentile(took, 50), 2), "max_s": round(max(took), 2)}


def planner_run(drawings: int) -> dict[str, Any]:
    """The planner, in a process of its own, planning a job over every drawing."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale_planner", history_url(), TASKS_TOPIC, str(PLAN_CHUNK)],
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=config.ROOT,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"the planner failed:\n{result.stdout}\n{result.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    if found["drawings"] != drawings:
        raise BenchError(f"the planner planned {found['drawings']} drawings of {drawings}")
    return found


async def measure_one(services: Services, drawings: int, sample: Drawings) -> dict[str, Any]:
    """Seed, migrate, read, plan: one scale."""
    url = scale_database_url(drawings)
    print(f"scale {drawings:,}: seeding", flush=True)
    out: dict[str, Any] = {"drawings": drawings, **await seed(url, drawings, sample)}
    sizes = await table_bytes(url)
    out["table_bytes"] = sizes
    out["old_agreement_read_s"] = await old_read_s(url)
    env = {"DATABASE_URL": url}
    services.start(
        "history", [str(BIN / "history-service"), "serve"], env, f"{history_url()}/readyz"
    )
    services.start("gateway", [str(BIN / "gateway")], env, f"{gateway_url()}/healthz")
    try:
        print(f"scale {drawings:,}: reading", flush=True)
        out["reads"] = await reads()
        out["status"] = await asyncio.to_thread(status_runs)
        print(f"scale {drawings:,}: planning", flush=True)
        out["planner"] = await asyncio.to_thread(planner_run, drawings)
    finally:
        services.stop("gateway")
        services.stop("history")
        await drop_database(url)
    return out


async def object_bytes(sample: Drawings, store_dir: Path) -> float:
    """Bytes on MinIO's disk per stored drawing: `sample` stored as history-service stores a
    batch (one snowball request) into a bucket of its own, the bucket's folder measured."""
    client = make_minio(S3Settings())
    bucket = f"bench-scale-{uuid.uuid4().hex[:8]}"
    client.make_bucket(bucket)
    try:
        await ObjectStore(client).put_many(bucket, [(str(uuid.uuid4()), p) for p in sample.pngs])
        return _du(store_dir / bucket) / len(sample.pngs)
    finally:
        delete_all(client, bucket)
        client.remove_bucket(bucket)


def _du(path: Path) -> int:
    result = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])


def kafka_bytes(sample: Drawings) -> dict[str, float]:
    """Bytes a drawing adds to the topics, which keep every record: its digits.submitted record
    (the image and the model input), its live prediction, and a rescore prediction for each
    promotion; serialised events (the mean over `sample`) plus Kafka's record framing, no
    compression (the producers use none)."""
    submitted, predicted = [], []
    for image in sample.pngs:
        made = prepare(image)
        event = DigitSubmitted(
            digit_id=uuid.uuid4(),
            submitted_at=datetime.now(UTC),
            media_type="image/png",
            image=image,
            width=made.width,
            height=made.height,
            client=ClientInfo(source="web", user_agent="Mozilla/5.0 (X11; Linux x86_64)"),
            model_input=made.model_input,
            preprocessing_version=PREPROCESSING_VERSION,
        )
        submitted.append(len(event.to_bytes()) + KAFKA_RECORD_OVERHEAD)
        reading = DigitPredicted(
            digit_id=event.digit_id,
            model=ModelRef(name="mnist-digits", version=2, sha256="ef" * 32),
            probabilities=[0.01] * 7 + [0.91] + [0.01] * 2,
            predicted_digit=7,
            confidence=0.91,
            kind="live",
            timings=Timings(queue_ms=3.1, preprocess_ms=0.0, inference_ms=0.42, batch_size=24),
            worker_id="inference-worker-0",
            provider="CPUExecutionProvider",
            submitted_at=event.submitted_at,
        )
        predicted.append(len(reading.to_bytes()) + KAFKA_RECORD_OVERHEAD)
    return {
        "submitted_record": round(sum(submitted) / len(submitted)),
        "prediction_record": round(sum(predicted) / len(predicted)),
    }


def projection(
    scales: list[dict[str, Any]], minio_per_drawing: float, kafka: dict[str, float]
) -> dict[str, Any]:
    """Bytes per drawing in each store (PostgreSQL's from the largest scale measured; Kafka's
    with the live prediction and one rescore) and at 100M drawings."""
    largest = max(scales, key=lambda s: s["drawings"])
    postgres = sum(largest["table_bytes"].values()) / largest["drawings"]
    kafka_one = kafka["submitted_record"] + 2 * kafka["prediction_record"]  # live + one rescore
    per_drawing = {
        "postgres": round(postgres),
        "minio": round(minio_per_drawing),
        "kafka": round(kafka_one),
        "kafka_per_further_promotion": round(kafka["prediction_record"]),
    }
    hundred_million = 100_000_000
    return {
        "bytes_per_drawing": per_drawing,
        "at_100M_gb": {
            store: round(per_drawing[store] * hundred_million / 1e9, 1)
            for store in ("postgres", "minio", "kafka")
        },
        "note": "PostgreSQL as seeded: two predictions and one rescore job item per drawing, one "
        "label in a hundred; each further promotion adds a prediction row, a job item and a "
        "digits.predicted record per drawing",
    }


async def upkeep_run() -> dict[str, Any]:
    """The writer's cost per drawing as versions accumulate (bench.upkeep), in a database of
    its own, dropped afterwards."""
    url = scale_database_url("upkeep")
    name = make_url(url).database
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    try:
        await asyncio.to_thread(upgrade, url)
        return await upkeep(url)
    finally:
        await drop_database(url)


async def measure(
    services: Services,
    sample: Drawings,
    scales: tuple[int, ...],
    minio_dir: Path,
    record: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Every scale, then the bytes per drawing and the projection to 100M drawings; what is
    measured so far is recorded after each step, so a run cut short keeps it."""
    minio = await object_bytes(sample, minio_dir)
    kafka = kafka_bytes(sample)
    found: dict[str, Any] = {"scales": [], "kafka_bytes": kafka, "minio_bytes": round(minio)}
    print("writer upkeep as versions accumulate", flush=True)
    found["upkeep"] = await upkeep_run()
    record(found)
    for drawings in scales:
        found["scales"].append(await measure_one(services, drawings, sample))
        found["projection"] = projection(found["scales"], minio, kafka)
        record(found)
    return found
