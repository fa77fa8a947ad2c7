"""Test helpers shared by unit, component and end-to-end tests: drawings, tiny models, fakes.

Drawings are rendered deterministically with Pillow (no binary fixtures); models are built
in-process with `onnx.helper`, so every test can make exactly the input it needs.
"""

from __future__ import annotations

import io
import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import httpx
import numpy as np
import numpy.typing as npt
import onnx
from minio.error import S3Error
from mnistream_common.consume import MessageHandler
from mnistream_common.events import (
    DigitPredicted,
    DigitSubmitted,
    ModelPromoted,
    ModelRef,
    PredictionKind,
    Timings,
)
from mnistream_common.history_api import (
    ModelInputOut,
    ModelInputsIn,
    ModelInputsOut,
    UnusableOut,
)
from mnistream_common.history_client import HistoryClient
from mnistream_common.preprocessing import PREPROCESSING_VERSION, PreprocessError, prepare
from mnistream_common.storage import ObjectStore, S3Uri, drawing_key, sha256_hex
from mnistream_system.canvas import CANVAS, encode, ink_on_transparent
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw
from urllib3 import HTTPResponse

MODEL_NAME = "mnist-digits"

# A "7"-like and a "4"-like figure as polylines in a 0..1 square (x right, y down).
SEVEN: tuple[tuple[tuple[float, float], ...], ...] = (
    ((0.25, 0.22), (0.72, 0.22), (0.45, 0.80)),
    ((0.38, 0.50), (0.62, 0.50)),
)
FOUR: tuple[tuple[tuple[float, float], ...], ...] = (
    ((0.55, 0.18), (0.28, 0.60), (0.72, 0.60)),
    ((0.58, 0.35), (0.58, 0.84)),
)

# A seven-segment display's digits (segments a-g as a clock's LCD draws them): a style of
# drawing people may have, which MNIST never shows a model.
SEGMENTS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "a": ((0.3, 0.2), (0.7, 0.2)),
    "b": ((0.7, 0.2), (0.7, 0.5)),
    "c": ((0.7, 0.5), (0.7, 0.8)),
    "d": ((0.3, 0.8), (0.7, 0.8)),
    "e": ((0.3, 0.5), (0.3, 0.8)),
    "f": ((0.3, 0.2), (0.3, 0.5)),
    "g": ((0.3, 0.5), (0.7, 0.5)),
}
SEVEN_SEGMENT: tuple[str, ...] = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc")
SEVEN_SEGMENT += ("abc", "abcdefg", "abcdfg")

InputKind = str
INPUT_KINDS: tuple[InputKind, ...] = (
    "rgba-dark",  # the browser canvas: dark strokes on a transparent background
    "rgba-light",  # light strokes on a transparent background (dark-theme canvas)
    "rgb-white",  # a photo or scan: dark ink on white paper
    "l-white",  # grayscale, white background
    "l-dark",  # grayscale, dark background: how MNIST itself looks
    "jpeg",  # dark ink on white, lossy
    "palette",  # an indexed-colour PNG
    "png16",  # a 16-bit grayscale PNG, white background
    "cmyk-jpeg",  # a print-workflow JPEG
)


# --- drawings -------------------------------------------------------------------------------


def stroke_ink(
    figure: Sequence[Sequence[tuple[float, float]]] = SEVEN,
    *,
    size: int = CANVAS,
    width: int | None = None,
    offset: tuple[float, float] = (0.0, 0.0),
    scale: float = 1.0,
) -> npt.NDArray[np.uint8]:
    """A digit-like stroke figure as ink (bright on black, uint8), `size`×`size` pixels."""
    image = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(image)
    stroke = width or max(2, size // 14)
    for line in figure:
        points = [_place(point, size, offset, scale) for point in line]
        draw.line(points, fill=255, width=stroke, joint="curve")
        radius = stroke / 2
        for px, py in points:  # round caps, like a pen
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=255)
    return np.asarray(image, dtype=np.uint8)


def _place(
    point: tuple[float, float], size: int, offset: tuple[float, float], scale: float
) -> tuple[float, float]:
    x, y = point
    return (
        (0.5 + (x - 0.5) * scale + offset[0]) * size,
        (0.5 + (y - 0.5) * scale + offset[1]) * size,
    )


def encode_ink(ink: npt.NDArray[np.uint8], kind: InputKind) -> bytes:
    """The same ink as the bytes of one input kind (see INPUT_KINDS)."""
    paper = 255 - ink  # dark ink on white paper
    if kind == "rgba-dark":
        return encode(ink_on_transparent(ink, colour=(20, 20, 30)), "PNG")
    if kind == "rgba-light":
        return encode(ink_on_transparent(ink, colour=(250, 250, 250)), "PNG")
    if kind == "rgb-white":
        return encode(Image.fromarray(paper).convert("RGB"), "PNG")
    if kind == "l-white":
        return encode(Image.fromarray(paper), "PNG")
    if kind == "l-dark":
        return encode(Image.fromarray(ink), "PNG")
    if kind == "jpeg":
        return encode(Image.fromarray(paper).convert("RGB"), "JPEG", quality=90)
    if kind == "palette":
        rgb = Image.fromarray(paper).convert("RGB")
        return encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
    if kind == "png16":
        return encode(Image.fromarray(paper.astype(np.uint16) * 257), "PNG")
    if kind == "cmyk-jpeg":
        return encode(Image.fromarray(paper).convert("RGB").convert("CMYK"), "JPEG", quality=92)
    raise ValueError(f"unknown input kind {kind!r}; known: {', '.join(INPUT_KINDS)}")


def drawing_png(
    figure: Sequence[Sequence[tuple[float, float]]] = SEVEN, *, size: int = CANVAS
) -> bytes:
    """A canvas-like PNG (dark strokes, transparent background) of a stroke figure."""
    return encode_ink(stroke_ink(figure, size=size), "rgba-dark")


def seven_segment_png(digit: int, rng: np.random.Generator) -> bytes:
    """`digit` drawn as a seven-segment display would, stroke width, place and size jittered."""
    figure = [SEGMENTS[segment] for segment in SEVEN_SEGMENT[digit]]
    ink = stroke_ink(
        figure,
        width=int(rng.uniform(14, 24)),
        offset=(rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1)),
        scale=rng.uniform(0.7, 1.0),
    )
    return encode_ink(ink, "rgba-dark")


def blank_png(size: int = CANVAS, *, mode: str = "RGBA") -> bytes:
    """An empty canvas: nothing drawn."""
    colour: Any = (0, 0, 0, 0) if mode == "RGBA" else "white"
    return encode(Image.new(mode, (size, size), colour), "PNG")


def animated_png(size: int = 64) -> bytes:
    """A two-frame APNG, each frame with ink."""
    frames = [Image.fromarray(255 - stroke_ink(f, size=size)) for f in (SEVEN, FOUR)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width`×`height` but carries almost no pixel data (a few bytes).

    Enough for a decoder to read the dimensions; decoding the pixels would fail (truncated).
    """
    signature = b"\x89PNG\r\n\x1a\n"
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    idat = zlib.compress(b"\x00" * 16)
    return signature + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


# --- models ---------------------------------------------------------------------------------


def tiny_onnx_model(
    seed: int = 0,
    *,
    input_name: str = "pixels",
    output_name: str = "probabilities",
    softmax: bool = True,
) -> bytes:
    """A tiny linear ONNX classifier: `pixels` [N,1,28,28] → `probabilities` [N,10] (softmax).

    Different seeds give different weights (and so different sha256 and predictions).
    `softmax=False` yields raw scores, which serving must refuse as non-probabilities.
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(0.0, 0.5, size=(28 * 28, 10)).astype(np.float32)
    bias = rng.normal(0.0, 0.1, size=(10,)).astype(np.float32)
    last = "probabilities_raw" if softmax else output_name
    nodes = [
        helper.make_node("Flatten", [input_name], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weights"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], [last]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", [last], [output_name], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny-digits",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 10])],
        initializer=[
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def inkless_onnx_model(seed: int = 0) -> bytes:
    """A linear classifier that loads and passes the warm-up (all zeros) but fails on any
    drawing with ink, as a broken candidate would at run time: its scores index a 10-element
    table with the batch's total ink, and onnxruntime refuses the out-of-bounds index."""
    model = onnx.load_from_string(tiny_onnx_model(seed))
    graph = model.graph
    scores = next(n for n in graph.node if n.op_type == "MatMul").output[0]
    graph.node.extend(
        [
            helper.make_node("ReduceSum", ["pixels"], ["ink"], keepdims=0),
            helper.make_node("Cast", ["ink"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["offset"]),
            helper.make_node("Add", [scores, "offset"], ["shifted"]),
        ]
    )
    add = next(n for n in graph.node if n.op_type == "Add" and n.input[0] == scores)
    add.input[0] = "shifted"
    graph.initializer.append(numpy_helper.from_array(np.zeros(10, np.float32), "table"))
    # Topological order: the new nodes before the Add that now reads their output.
    ordered = [n for n in graph.node if n is not add] + [add]
    softmax = next(n for n in ordered if n.op_type == "Softmax")
    ordered.remove(softmax)
    del graph.node[:]
    graph.node.extend([*ordered, softmax])
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def model_ref(onnx_bytes: bytes, version: int = 1, name: str = MODEL_NAME) -> ModelRef:
    """The ModelRef events carry for these exact bytes."""
    return ModelRef(name=name, version=version, sha256=sha256_hex(onnx_bytes))


def promotion(onnx_bytes: bytes, version: int = 1, *, previous: int | None = None) -> ModelPromoted:
    """A `model.promoted` event for a model stored at s3://mlflow/models/v{version}.onnx."""
    return ModelPromoted(
        model=model_ref(onnx_bytes, version),
        previous_version=previous,
        onnx_uri=f"s3://mlflow/models/v{version}.onnx",
        architecture="linear",
        metrics={"test_accuracy": 0.9},
        promoted_by="tests@localhost",
        reason="test",
        promoted_at=datetime.now(UTC),
    )


# --- events and records ---------------------------------------------------------------------


def submitted(
    image: bytes | None = None,
    *,
    digit_id: uuid.UUID | None = None,
    schema_version: int | None = None,
) -> DigitSubmitted:
    """A `digits.submitted` event carrying a canvas drawing (or the given bytes).

    Version 2 (with the model input, as the gateway publishes it) when the image can become an
    input; version 1 (no input, as older records and other producers have it) otherwise, or when
    asked for.
    """
    data = drawing_png() if image is None else image
    extra: dict[str, Any] = {}
    if schema_version != 1:
        try:
            extra = {
                "model_input": prepare(data).model_input,
                "preprocessing_version": PREPROCESSING_VERSION,
            }
        except PreprocessError:
            if schema_version == 2:
                raise
    return DigitSubmitted(
        schema_version=2 if extra else 1,
        digit_id=digit_id or uuid.uuid4(),
        submitted_at=datetime.now(UTC),
        media_type="image/png",
        image=data,
        width=CANVAS,
        height=CANVAS,
        **extra,
    )


def prediction(
    digit_id: uuid.UUID | None = None,
    model: ModelRef | None = None,
    *,
    digit: int = 7,
    confidence: float = 0.91,
    kind: PredictionKind = "live",
    worker_id: str = "test-worker",
    timings: Timings | None = None,
    **fields: Any,
) -> DigitPredicted:
    """A `DigitPredicted` reading `digit` with `confidence` (the rest spread evenly); any other
    field (event_id, occurred_at, submitted_at, job_id, job_total, ...) by keyword."""
    probabilities = [round((1.0 - confidence) / 9, 6)] * 10
    probabilities[digit] = confidence
    return DigitPredicted(
        digit_id=digit_id or uuid.uuid4(),
        model=model or ModelRef(name=MODEL_NAME, version=1, sha256="ab" * 32),
        probabilities=probabilities,
        predicted_digit=digit,
        confidence=confidence,
        kind=kind,
        timings=timings or Timings(queue_ms=0, preprocess_ms=0, inference_ms=0, batch_size=1),
        worker_id=worker_id,
        provider="CPUExecutionProvider",
        **fields,
    )


@dataclass
class FakeRecord:
    """The fields of an aiokafka ConsumerRecord that consumers read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


async def deliver(callback: MessageHandler, batch: Sequence[FakeRecord]) -> None:
    """Hand `batch` to a subscriber callback (`typed_batch`) as FastStream hands it a batch."""
    await callback(cast(Any, SimpleNamespace(raw_message=list(batch))))


def records(values: Sequence[bytes | None], *, topic: str = "digits.submitted") -> list[FakeRecord]:
    """Consumer records at offsets 0.. of partition 0, keyed by position."""
    return [
        FakeRecord(topic, 0, offset, f"key-{offset}".encode(), value)
        for offset, value in enumerate(values)
    ]


# --- fakes at the edge ----------------------------------------------------------------------


@dataclass
class Published:
    """One message handed to a fake publisher."""

    message: Any
    key: bytes | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakePublisher:
    """Captures what a handler publishes (acknowledged at once, like Kafka with acks=all)."""

    sent: list[Published] = field(default_factory=list)

    async def publish(
        self, message: Any, *, key: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Record the message (and the headers it carries)."""
        self.sent.append(Published(message, key, headers or {}))

    @property
    def bodies(self) -> list[bytes]:
        """Every published message body, in order."""
        return [p.message for p in self.sent]


@dataclass
class FakeObjectStore:
    """In-memory object storage with MinIO's errors: NoSuchKey for a missing object, and a
    connection error for every call while `down`."""

    objects: dict[str, bytes] = field(default_factory=dict)
    reads: list[str] = field(default_factory=list)
    down: bool = False

    def add(self, uri: S3Uri | str, data: bytes) -> None:
        """Store bytes under an object URI."""
        self.objects[str(uri)] = data

    def add_drawing(self, bucket: str, digit_id: uuid.UUID, data: bytes) -> None:
        """Store a drawing's original image where the history service puts it."""
        self.add(S3Uri(bucket, drawing_key(digit_id)), data)

    async def put(self, uri: S3Uri, data: bytes, content_type: str) -> None:
        """Store bytes (the content type is not kept)."""
        self._check()
        self.objects[str(uri)] = data

    async def put_many(self, bucket: str, objects: list[tuple[str, bytes]]) -> None:
        """Store several objects at once."""
        self._check()
        for key, data in objects:
            self.objects[str(S3Uri(bucket, key))] = data

    async def get(self, uri: S3Uri) -> bytes:
        """Read a whole object, or raise S3Error NoSuchKey."""
        self._check()
        self.reads.append(str(uri))
        try:
            return self.objects[str(uri)]
        except KeyError:
            raise _s3_error("NoSuchKey", uri) from None

    async def exists(self, uri: S3Uri) -> bool:
        """Whether an object exists."""
        self._check()
        return str(uri) in self.objects

    def as_store(self) -> ObjectStore:
        """Typed as the real store, for code that annotates it."""
        return cast(ObjectStore, self)

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("object storage is down")


@dataclass
class FakeRegistry:
    """MLflow's model-version REST route, in memory: the versions `mnistream train` would have
    registered (tags onnx_uri and onnx_sha256), as `promotion` names them; `down` answers 503."""

    versions: dict[tuple[str, int], dict[str, str]] = field(default_factory=dict)
    asked: list[tuple[str, int]] = field(default_factory=list)
    down: bool = False

    def add(self, onnx_bytes: bytes, version: int, name: str = MODEL_NAME) -> None:
        """Register the model `promotion(onnx_bytes, version)` promotes."""
        self.versions[name, version] = {
            "onnx_uri": f"s3://mlflow/models/v{version}.onnx",
            "onnx_sha256": sha256_hex(onnx_bytes),
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer GET /api/2.0/mlflow/model-versions/get as MLflow does."""
        if self.down:
            return httpx.Response(503, text="registry down")
        assert request.url.path == "/api/2.0/mlflow/model-versions/get", request.url
        name, version = request.url.params["name"], int(request.url.params["version"])
        self.asked.append((name, version))
        tags = self.versions.get((name, version))
        if tags is None:
            return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST"})
        listed = [{"key": k, "value": v} for k, v in tags.items()]
        return httpx.Response(
            200, json={"model_version": {"name": name, "version": str(version), "tags": listed}}
        )

    def transport(self) -> httpx.MockTransport:
        """An httpx transport to this registry."""
        return httpx.MockTransport(self.handle)


def _s3_error(code: str, uri: S3Uri) -> S3Error:
    response = HTTPResponse(body=b"", status=404)
    return S3Error(response, code, "not found", uri.key, "req", "host", uri.bucket, uri.key)


@dataclass
class FakeHistory:
    """history-service's internal API for rescores, in memory: stored ids (paged) and model
    inputs (made from each stored image, as history-service makes them), or down."""

    images: dict[uuid.UUID, bytes] = field(default_factory=dict)
    down: bool = False
    input_requests: int = 0

    def store(self, digit_id: uuid.UUID, image: bytes) -> None:
        """A stored drawing."""
        self.images[digit_id] = image

    def client(self) -> HistoryClient:
        """A HistoryClient that reaches this fake."""
        return HistoryClient.at("http://history.test", transport=httpx.MockTransport(self.handle))

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as history-service would."""
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/internal/digit-ids":
            after, limit = request.url.params.get("after"), int(request.url.params["limit"])
            rest = [d for d in sorted(self.images) if after is None or str(d) > after]
            return httpx.Response(200, json=[str(d) for d in rest[:limit]])
        if request.url.path == "/internal/digit-ids/count":
            return httpx.Response(200, json={"count": len(self.images)})
        if request.url.path == "/internal/model-inputs":
            self.input_requests += 1
            return httpx.Response(200, content=self._inputs(request).model_dump_json())
        return httpx.Response(404, json={"detail": f"no route {request.url.path}"})

    def _inputs(self, request: httpx.Request) -> ModelInputsOut:
        wanted = ModelInputsIn.model_validate_json(request.content).digit_ids
        inputs, unusable = [], []
        for digit_id in (d for d in wanted if d in self.images):
            try:
                model_input = prepare(self.images[digit_id]).model_input
            except PreprocessError as exc:
                unusable.append(UnusableOut(digit_id=digit_id, reason=f"unreadable: {exc}"))
                continue
            inputs.append(
                ModelInputOut(digit_id=digit_id, model_input=model_input, preprocessing_version=1)
            )
        missing = [d for d in wanted if d not in self.images]
        return ModelInputsOut(inputs=inputs, missing=missing, unusable=unusable)
