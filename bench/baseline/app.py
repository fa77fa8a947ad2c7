"""BASELINE, NOT PART OF THE PRODUCT: the teaching app's design, rebuilt for comparison.

What it reproduces, on purpose: one synchronous FastAPI endpoint that, for every request,
opens a new onnxruntime `InferenceSession` from the model file, resizes the 280×280 canvas
naively to 28×28 (no cropping, no centring), runs the model, and writes a row to the database
(Postgres here, MySQL in the teaching app) inside the request, with a synchronous driver.
The only liberty taken: the ink is read from the canvas's alpha channel, as the teaching
app's opaque canvas gave it directly, so the model sees the drawing at all.
"""

from __future__ import annotations

import io
import os
from typing import Annotated, Any

import numpy as np
import onnxruntime as ort
from fastapi import Body, FastAPI
from PIL import Image
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

TABLE = """
CREATE TABLE IF NOT EXISTS baseline_predictions (
    id SERIAL PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    image BYTEA NOT NULL,
    predicted INTEGER NOT NULL,
    confidence DOUBLE PRECISION NOT NULL
)
"""


def _sync_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql+psycopg2://")


def _pixels(png: bytes) -> np.ndarray[Any, np.dtype[np.float32]]:
    image = Image.open(io.BytesIO(png))
    ink = image.getchannel("A") if image.mode == "RGBA" else image.convert("L")
    small = ink.resize((28, 28))  # the naive resize: the whole canvas, as drawn
    return (np.asarray(small, dtype=np.float32) / 255.0).reshape(1, 1, 28, 28)


def prepare_database(database_url: str) -> None:
    """Create the baseline's table (once, before its worker processes start)."""
    engine = create_engine(_sync_url(database_url))
    with engine.begin() as conn:
        conn.execute(text(TABLE))
    engine.dispose()


def create_app() -> FastAPI:
    """The baseline app; BASELINE_ONNX names the model file, DATABASE_URL the database."""
    model_path = os.environ["BASELINE_ONNX"]
    engine: Engine = create_engine(_sync_url(os.environ["DATABASE_URL"]))
    app = FastAPI(title="BASELINE: the teaching app's design (not mnistream)")

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(image: Annotated[bytes, Body(media_type="image/png")]) -> dict[str, Any]:
        session = ort.InferenceSession(model_path)  # per request, as the teaching app did
        probabilities = session.run(None, {"pixels": _pixels(image)})[0][0]
        digit = int(np.argmax(probabilities))
        confidence = float(probabilities[digit])
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO baseline_predictions (image, predicted, confidence) "
                    "VALUES (:image, :predicted, :confidence)"
                ),
                {"image": image, "predicted": digit, "confidence": confidence},
            )
        return {"predicted_digit": digit, "confidence": confidence}

    return app
