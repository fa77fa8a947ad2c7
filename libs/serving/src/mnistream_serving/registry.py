"""A promotion checked against the MLflow model registry before its model is loaded.

Anyone who can write to Kafka can publish `model.promoted`, and the sha256 in the event only
proves that the bytes are the ones the event names, not that anyone registered them. A version
is promotable when `mnistream train` registered it with its ONNX object's URI and sha256 as
tags; a worker loads a promotion only if the registry holds that version with those same tags.
A forged event must then also forge the registry: here that only raises the bar, since the
native stack and compose run MLflow without authentication (Kafka ACLs and per-service
credentials are what would close it).

Read over MLflow's REST API with httpx: the live path does not import MLflow (a second to
import, and most of the trainer's dependencies).
"""

from __future__ import annotations

from typing import Any

import httpx
from mnistream_common.events import ModelRef

from mnistream_serving.model import ModelRejectedError


class ModelUnavailableError(Exception):
    """The model could not be fetched or checked right now (storage or the registry down);
    trying again may succeed."""


# The registry's answers that mean "no such version" rather than "try again".
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class RegistryCheck:
    """The registry's word on one promoted version: the ONNX URI and sha256 it was registered
    with must be the event's."""

    def __init__(
        self,
        tracking_uri: str,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._uri = tracking_uri.rstrip("/")
        self._transport = transport
        self._timeout_s = timeout_s

    async def verify(self, ref: ModelRef, onnx_uri: str) -> None:
        """Return if the registry holds `ref` with `onnx_uri`; raise ModelRejectedError if it
        does not, ModelUnavailableError if it cannot say."""
        tags = await self._tags(ref)
        registered = tags.get("onnx_sha256")
        if registered != ref.sha256:
            raise ModelRejectedError(
                f"{ref.name} v{ref.version} was registered with sha256 {registered or 'none'}, "
                f"not the promotion's {ref.sha256}: refused as forged"
            )
        if tags.get("onnx_uri") != onnx_uri:
            raise ModelRejectedError(
                f"{ref.name} v{ref.version} was registered at {tags.get('onnx_uri') or 'no URI'}, "
                f"not the promotion's {onnx_uri}: refused as forged"
            )

    async def _tags(self, ref: ModelRef) -> dict[str, str]:
        try:
            async with httpx.AsyncClient(
                base_url=self._uri, transport=self._transport, timeout=self._timeout_s
            ) as client:
                answer = await client.get(
                    "/api/2.0/mlflow/model-versions/get",
                    params={"name": ref.name, "version": str(ref.version)},
                )
        except httpx.HTTPError as exc:
            raise ModelUnavailableError(
                f"the model registry at {self._uri} cannot be reached to check "
                f"{ref.name} v{ref.version}: {exc!r}"
            ) from exc
        if answer.status_code >= 500:
            raise ModelUnavailableError(
                f"the model registry at {self._uri} failed ({answer.status_code}) to check "
                f"{ref.name} v{ref.version}"
            )
        body = _json(answer)
        if answer.status_code >= 400:
            if body.get("error_code") in _NOT_FOUND:
                raise ModelRejectedError(
                    f"{ref.name} v{ref.version} is not in the model registry: only registered "
                    "versions are loaded"
                )
            raise ModelUnavailableError(
                f"the model registry at {self._uri} refused ({answer.status_code}) to check "
                f"{ref.name} v{ref.version}: {body.get('message', answer.text[:200])}"
            )
        version = body.get("model_version")
        if not isinstance(version, dict):
            raise ModelUnavailableError(f"the model registry at {self._uri} answered {body!r:.200}")
        tags = version.get("tags", [])
        return {
            str(tag.get("key")): str(tag.get("value"))
            for tag in (tags if isinstance(tags, list) else [])
            if isinstance(tag, dict)
        }


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
