"""Optional payload encryption: an AES-GCM payload codec, its keys, and a remote codec server.

With a key configured, every payload a Sternway client or worker writes to Temporal (run input,
memo, activity inputs and results, heartbeats, failure details and messages, the final status) is
encrypted before it leaves the process, so the server's history holds ciphertext only. Without a
key nothing changes: payloads are plain JSON, as before.

Keys come from ``STERNWAY_CODEC_KEYS`` or from the file named by ``STERNWAY_CODEC_KEY_FILE``, in
the same format: ``id:base64key`` entries separated by commas or new lines (``#`` starts a comment
in the file). Each key is 32 random bytes (AES-256). The **first** key encrypts; every listed key
decrypts, found by the ``encryption-key-id`` metadata of the payload. To rotate, put a new key
first and keep the old ones after it until no open run or retained history needs them.

An encrypted payload has the metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <id>``; its data is a random 12-byte nonce followed by the AES-GCM
ciphertext (and tag) of the whole original payload (metadata and data), authenticated together
with the key id. Payloads that are not encrypted (sent by a client without the codec, such as
``temporal workflow signal``) pass through decoding unchanged.

:mod:`sternway.codec_server` serves ``POST /encode`` and ``POST /decode`` in Temporal's remote
codec JSON format, so the Web UI (``--ui-codec-endpoint``) and ``temporal --codec-endpoint``
can show decrypted payloads to whoever holds its token (``STERNWAY_CODEC_TOKEN``) and names its
address as Host.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    PayloadConverter,
)

from sternway.workflows.errors import ArgsError, SternwayError

__all__ = [
    "ENCODING",
    "KEYS_ENV",
    "KEY_FILE_ENV",
    "KEY_ID_METADATA",
    "AesGcmCodec",
    "CodecConfigError",
    "CodecError",
    "UnkeyedCodec",
    "codec_from_env",
    "data_converter",
    "data_converter_from_env",
    "load_keys",
    "new_key",
    "parse_keys",
]

ENCODING = b"binary/encrypted"
"""The ``encoding`` metadata of an encrypted payload."""
KEY_ID_METADATA = "encryption-key-id"
"""The metadata naming the key a payload was encrypted with."""
KEYS_ENV = "STERNWAY_CODEC_KEYS"
KEY_FILE_ENV = "STERNWAY_CODEC_KEY_FILE"
KEY_BYTES = 32
NONCE_BYTES = 12
MAX_REQUEST_BYTES = 16 * 1024 * 1024
"""The largest request body the codec server reads (Temporal's payload limit is 2 MiB)."""

_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CodecConfigError(ArgsError):
    """The codec keys are configured wrongly (the CLI exits 2)."""


class CodecError(SternwayError):
    """A payload cannot be decrypted: its key is not configured, or it was tampered with."""


def new_key() -> str:
    """A fresh random AES-256 key, base64-encoded (for ``id:key`` entries)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def parse_keys(text: str, source: str = KEYS_ENV) -> dict[str, bytes]:
    """Keys from ``id:base64key`` entries separated by commas or new lines, first one first.

    ``#`` starts a comment that runs to the end of the line. Raises :class:`CodecConfigError`
    naming ``source`` and the entry (never the key itself) on anything wrong.
    """
    keys: dict[str, bytes] = {}
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    for number, entry in enumerate((e.strip() for line in lines for e in line.split(",")), 1):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not key_id or not encoded:
            raise CodecConfigError(f"{source}: entry {number} is not of the form id:base64key")
        if not _KEY_ID.match(key_id):
            raise CodecConfigError(
                f"{source}: key id {key_id[:60]!r} is invalid: use 1-64 letters, digits, "
                "'_', '.' or '-'"
            )
        if key_id in keys:
            raise CodecConfigError(f"{source}: key id {key_id!r} is given twice")
        try:
            padded = encoded + "=" * (-len(encoded) % 4)
            key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise CodecConfigError(f"{source}: key {key_id!r} is not valid base64") from None
        if len(key) != KEY_BYTES:
            raise CodecConfigError(
                f"{source}: key {key_id!r} has {len(key)} bytes; AES-256 needs {KEY_BYTES} "
                "(make one with `sternway codec-key`)"
            )
        keys[key_id] = key
    if not keys:
        raise CodecConfigError(f"{source}: no key is given")
    return keys


def load_keys(environ: Mapping[str, str] | None = None) -> dict[str, bytes] | None:
    """The keys of ``STERNWAY_CODEC_KEYS`` or ``STERNWAY_CODEC_KEY_FILE``; None when neither
    is set (or both are empty). Setting both is an error: it would be unclear which one wins."""
    env = os.environ if environ is None else environ
    inline = env.get(KEYS_ENV, "").strip()
    file = env.get(KEY_FILE_ENV, "").strip()
    if inline and file:
        raise CodecConfigError(f"set {KEYS_ENV} or {KEY_FILE_ENV}, not both")
    if inline:
        return parse_keys(inline, KEYS_ENV)
    if file:
        try:
            text = Path(file).read_text()
        except (OSError, ValueError) as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise CodecConfigError(f"{KEY_FILE_ENV}: cannot read {file}: {reason}") from None
        return parse_keys(text, f"{KEY_FILE_ENV} ({file})")
    return None


class AesGcmCodec(PayloadCodec):
    """Encrypts payloads with AES-256-GCM under the current key; decrypts with any known key."""

    def __init__(self, keys: Mapping[str, bytes], current: str | None = None) -> None:
        if not keys:
            raise CodecConfigError("the codec needs at least one key")
        # Imported here: processes with no key (most CLI calls) never need cryptography.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current if current is not None else next(iter(keys))
        if self.current not in self._ciphers:
            raise CodecConfigError(f"the current key {self.current!r} is not among the keys")

    @property
    def key_ids(self) -> list[str]:
        """The ids of the keys this codec can decrypt with, the current one first."""
        return [self.current, *(k for k in self._ciphers if k != self.current)]

    def encode_payload(self, payload: Payload) -> Payload:
        """``payload`` encrypted under the current key."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        key_id = self.current.encode()
        sealed = self._ciphers[self.current].encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=nonce + sealed
        )

    def decode_payload(self, payload: Payload) -> Payload:
        """``payload`` decrypted; one that is not encrypted is returned as it is."""
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            known = ", ".join(self.key_ids)
            raise CodecError(
                f"a payload is encrypted with key {key_id[:64]!r}, which is not configured "
                f"(keys here: {known}); add it to {KEYS_ENV} or {KEY_FILE_ENV}"
            )
        from cryptography.exceptions import InvalidTag

        data = payload.data
        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id.encode())
        except (InvalidTag, ValueError):
            raise CodecError(
                f"a payload encrypted with key {key_id!r} cannot be decrypted: "
                "it was changed, or the key with that id is not the one that encrypted it"
            ) from None
        return Payload.FromString(plain)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """See :class:`temporalio.converter.PayloadCodec`."""
        return [self.encode_payload(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """See :class:`temporalio.converter.PayloadCodec`."""
        return [self.decode_payload(p) for p in payloads]


class UnkeyedCodec(PayloadCodec):
    """The codec of a process with no key: payloads stay plain, and an encrypted one met by
    chance (a run written by an encrypting client) fails with a clear :class:`CodecError`
    instead of an unknown-encoding error deep in the SDK."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Payloads go out as they are."""
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Plain payloads come in as they are; encrypted ones cannot."""
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
                raise CodecError(
                    f"a payload is encrypted (key {key_id[:64]!r}) and no codec key is "
                    f"configured: set {KEYS_ENV} or {KEY_FILE_ENV}"
                )
        return list(payloads)


def codec_from_env(environ: Mapping[str, str] | None = None) -> AesGcmCodec | None:
    """The codec for the configured keys, or None when no key is configured."""
    keys = load_keys(environ)
    return AesGcmCodec(keys) if keys else None


class _PydanticOnDemand(PayloadConverter):
    """temporalio's pydantic payload converter, built when the first value is converted.

    It writes and reads the same payloads; what it saves is the import of pydantic (a fifth of
    a fresh process's time) in the commands that convert no value: ``sternway list`` and
    ``sternway status --json`` (which reads the status as raw JSON).

    One converter serves every instance. The SDK makes a new payload converter for every
    workflow activation, and pydantic's keeps its type adapters per instance: a converter of
    its own for each would build them again for every value it reads.
    """

    _shared: ClassVar[PayloadConverter | None] = None

    @classmethod
    def _built(cls) -> PayloadConverter:
        if cls._shared is None:
            from temporalio.contrib.pydantic import PydanticPayloadConverter

            cls._shared = PydanticPayloadConverter()
        return cls._shared

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        """Each value as a payload (pydantic JSON for models and plain values alike)."""
        # A call with no argument (the status query) converts nothing: no pydantic for it.
        return self._built().to_payloads(values) if values else []

    def from_payloads(
        self, payloads: Sequence[Payload], type_hints: list[type] | None = None
    ) -> list[Any]:
        """Each payload as a value, of its type hint when one is given."""
        if type_hints is not None and all(hint is RawValue for hint in type_hints):
            return [RawValue(payload) for payload in payloads]  # as pydantic's would: as it is
        return self._built().from_payloads(payloads, type_hints)


def data_converter(codec: PayloadCodec | None = None) -> DataConverter:
    """Sternway's data converter: pydantic JSON, encrypted by ``codec`` when one is given.

    With a codec, failure messages and stack traces move into an encoded payload too (Temporal's
    ``encode_common_attributes``), because job errors can quote what a job saw. Without one,
    payloads stay plain JSON (:class:`UnkeyedCodec` only turns an encrypted payload into a clear
    error).
    """
    if codec is None:
        return DataConverter(
            payload_converter_class=_PydanticOnDemand, payload_codec=UnkeyedCodec()
        )
    return DataConverter(
        payload_converter_class=_PydanticOnDemand,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def data_converter_from_env(environ: Mapping[str, str] | None = None) -> DataConverter:
    """:func:`data_converter` with the codec of the configured keys (if any)."""
    return data_converter(codec_from_env(environ))
