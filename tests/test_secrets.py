"""Secrets: args of type ``secret`` never show in status, memo, search attributes or worker logs,
and with a codec key the history holds ciphertext only, which the codec server decodes for the UI.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from sternway import RunHandle, submit
from sternway.codec import (
    ENCODING,
    KEY_ID_METADATA,
    AesGcmCodec,
    CodecConfigError,
    CodecError,
    UnkeyedCodec,
    data_converter,
    load_keys,
    new_key,
    parse_keys,
)
from sternway.worker import load_registry
from sternway.workflows.models import MASK, RunStatus, clip_masked, mask_fragments, mask_secrets
from tests.cli import cli_env, sternway
from tests.test_processes import free_port, spawn, until_http

RUNBOOK = """
name: secret-use
description: Use an API token the way runbooks do
args:
  required:
    - {name: root, type: str, desc: where the first job leaves its proof}
    - {name: token, type: secret, desc: API token}
  optional:
    - {name: linger, type: str, default: "0", desc: seconds the first job lingers}
jobs:
  - name: use
    run: shell
    with:
      argv:
        - sh
        - -c
        - >-
          printf %s "$1" > "$2/used"; echo "token $1 accepted" >&2;
          echo "calling with $1"; sleep "$3"
        - use
        - "${{ args.token }}"
        - "${{ args.root }}"
        - "${{ args.linger }}"
  - name: echo
    after: [use]
    run: noop
    with: {token: "${{ args.token }}", note: "the token is ${{ args.token }}"}
  - name: leaky
    after: [echo]
    continue_on_error: true
    run: shell
    with: {argv: [sh, -c, 'echo "rejected token $1" >&2; exit 3', leaky, "${{ args.token }}"]}
  - name: call
    after: [echo]
    continue_on_error: true
    run: http
    with: {url: "http://127.0.0.1:1/check?token=${{ args.token }}", timeout: 5s}
"""


@pytest.fixture
def runbooks(tmp_path: Path) -> Path:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "secret-use.yaml").write_text(RUNBOOK)
    return folder


@pytest.fixture
def secret() -> str:
    return f"tok-{uuid.uuid4().hex}"


def check_masked(status: RunStatus, secret: str, root: Path) -> None:
    """The run used the real secret, and its status shows it nowhere."""
    assert status.state == "COMPLETED", status.model_dump_json(indent=1)
    assert (root / "used").read_text() == secret  # the job saw the real value
    assert secret not in status.model_dump_json()
    assert status.args["token"] == MASK
    use = status.job("use")
    assert use.output["stdout"] == f"calling with {MASK}\n"
    assert use.log[0].stderr_tail == f"token {MASK} accepted\n"
    assert status.job("echo").output == {"token": MASK, "note": f"the token is {MASK}"}
    leaky, call = status.job("leaky"), status.job("call")
    assert leaky.state == call.state == "FAILED"
    assert leaky.error is not None and leaky.error.message == f"exit code 3: rejected token {MASK}"
    assert call.error is not None and f"token={MASK}" in call.error.message


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every payload in a history event, with the field path it sits at."""
    if isinstance(message, Payload):
        yield path, message
        return
    for field, value in message.ListFields():
        where = f"{path}.{field.name}"
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if isinstance(item, Message):
                    yield from payloads_in(item, f"{where}[{key}]")
        elif isinstance(value, Message):
            yield from payloads_in(value, where)
        else:  # a repeated message field
            for i, item in enumerate(value):
                yield from payloads_in(item, f"{where}[{i}]")


def raw_bytes(history: WorkflowHistory) -> bytes:
    """The history as the server stores it: payload data is in there as plain bytes."""
    return b"".join(event.SerializeToString() for event in history.events)


async def post(
    url: str,
    body: Any,
    origin: str | None = None,
    *,
    token: str | None = None,
    host: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """POST JSON (with a bearer token, a Host); the status, the headers and the parsed answer."""
    headers = {"Content-Type": "application/json", "X-Namespace": "default"}
    if origin:
        headers["Origin"] = origin
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if host:
        headers["Host"] = host
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )

    def call() -> tuple[int, dict[str, str], Any]:
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), json.loads(err.read())

    return await asyncio.to_thread(call)


def as_json(payload: Payload) -> dict[str, Any]:
    """A payload in the remote codec's JSON form (bytes as base64)."""
    return {
        "metadata": {k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
        "data": base64.b64encode(payload.data).decode(),
    }


# ------------------------------------------------------------------------------ codec units

KEY_A, KEY_B = new_key(), new_key()


async def test_codec_round_trip_rotation_and_tampering() -> None:
    old = AesGcmCodec(parse_keys(f"a:{KEY_A}"))
    plain = pydantic_data_converter.payload_converter.to_payload({"token": "hunter2"})
    assert plain is not None
    [sealed] = await old.encode([plain])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[KEY_ID_METADATA] == b"a"
    assert b"hunter2" not in sealed.SerializeToString()
    [again] = await old.encode([plain])
    assert again.data != sealed.data  # a fresh nonce every time
    assert await old.decode([sealed]) == [plain]
    # Rotation: b encrypts now, a still decrypts what it wrote.
    rotated = AesGcmCodec(parse_keys(f"b:{KEY_B}\n# the previous key\na:{KEY_A}"))
    assert rotated.current == "b" and rotated.key_ids == ["b", "a"]
    assert await rotated.decode([sealed]) == [plain]
    [newer] = await rotated.encode([plain])
    assert newer.metadata[KEY_ID_METADATA] == b"b"
    with pytest.raises(CodecError, match="key 'b', which is not configured"):
        await old.decode([newer])
    # Plain payloads (from clients without the codec) pass through.
    assert await old.decode([plain]) == [plain]
    tampered = Payload()
    tampered.CopyFrom(sealed)
    tampered.data = sealed.data[:-1] + bytes([sealed.data[-1] ^ 1])
    with pytest.raises(CodecError, match="cannot be decrypted"):
        await old.decode([tampered])
    relabelled = Payload()
    relabelled.CopyFrom(newer)
    relabelled.metadata[KEY_ID_METADATA] = b"a"  # the key id is authenticated too
    with pytest.raises(CodecError, match="cannot be decrypted"):
        await rotated.decode([relabelled])
    with pytest.raises(CodecError, match="no codec key is configured"):
        await UnkeyedCodec().decode([sealed])


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"STERNWAY_CODEC_KEYS": "a"}, "not of the form id:base64key"),
        ({"STERNWAY_CODEC_KEYS": "a:%%%"}, "not valid base64"),
        ({"STERNWAY_CODEC_KEYS": "a:" + base64.b64encode(b"x" * 16).decode()}, "16 bytes"),
        ({"STERNWAY_CODEC_KEYS": f"a:{KEY_A},a:{KEY_B}"}, "given twice"),
        ({"STERNWAY_CODEC_KEYS": f"bad id:{KEY_A}"}, "key id 'bad id' is invalid"),
        ({"STERNWAY_CODEC_KEYS": f"a:{KEY_A}", "STERNWAY_CODEC_KEY_FILE": "/x"}, "not both"),
        ({"STERNWAY_CODEC_KEY_FILE": "/no/such/file"}, "cannot read /no/such/file"),
        ({"STERNWAY_CODEC_KEYS": " , "}, "no key is given"),
    ],
)
def test_bad_key_configuration_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(CodecConfigError, match=message) as caught:
        load_keys(environ)
    assert KEY_A not in str(caught.value) and KEY_B not in str(caught.value)


def test_keys_from_a_file_and_no_key_means_no_encryption(tmp_path: Path) -> None:
    file = tmp_path / "keys"
    file.write_text(f"# rotated monthly\nnew:{KEY_B}\nold:{KEY_A}\n")
    keys = load_keys({"STERNWAY_CODEC_KEY_FILE": str(file)})
    assert keys is not None and list(keys) == ["new", "old"]
    assert load_keys({}) is None
    plain = data_converter(None)
    assert isinstance(plain.payload_codec, UnkeyedCodec)
    # Plain pydantic JSON, the same bytes as temporalio's pydantic converter writes.
    value = {"when": datetime(2026, 1, 1, tzinfo=UTC), "n": 1}
    assert plain.payload_converter.to_payloads([value]) == (
        pydantic_data_converter.payload_converter.to_payloads([value])
    )


def test_a_new_converter_reads_with_the_type_adapters_already_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK builds a payload converter for every workflow activation. Sternway's share one
    pydantic converter, so a status read once is read again without building its validator."""
    from pydantic import TypeAdapter

    from sternway.workflows.models import JobStatus, RunStatus

    status = RunStatus(run_id="r-1", action="a", jobs=[JobStatus(name="j")])
    payload = data_converter(None).payload_converter.to_payload(status)
    assert payload is not None
    assert data_converter(None).payload_converter.from_payload(payload, RunStatus) == status
    built: list[object] = []
    build = TypeAdapter.__init__

    def counted(self: TypeAdapter[Any], *args: Any, **kwargs: Any) -> None:
        built.append(args[0] if args else kwargs.get("type"))
        build(self, *args, **kwargs)

    monkeypatch.setattr(TypeAdapter, "__init__", counted)
    for _ in range(3):  # three activations: three new converters
        assert data_converter(None).payload_converter.from_payload(payload, RunStatus) == status
    assert built == []


async def test_the_codec_server_wants_its_host_and_token_and_gives_any_origin_no_credentials() -> (
    None
):
    """Host is the bind address (any loopback name), the token comes as a bearer or in the path,
    and ``--cors-origin '*'`` answers ``*`` without ``Allow-Credentials``."""
    from sternway.codec_server import make_codec_server, serve_in_thread

    token = f"t-{uuid.uuid4().hex}"
    server = make_codec_server(
        AesGcmCodec(parse_keys(f"a:{KEY_A}")), cors_origins=["*"], token=token
    )
    serve_in_thread(server)
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}"
    empty: dict[str, list[object]] = {"payloads": []}
    try:
        code, headers, _ = await post(f"{url}/decode", empty, "http://any.example", token=token)
        assert code == 200 and headers["Access-Control-Allow-Origin"] == "*"
        assert "Access-Control-Allow-Credentials" not in headers
        assert (await post(f"{url}/{token}/decode", empty, host=f"localhost:{port}"))[0] == 200
        assert (await post(f"{url}/encode", empty, token=token, host=f"[::1]:{port}"))[0] == 200
        for host in (f"rebound.example:{port}", f"127.0.0.1:{port + 1}", "", "a:b:c"):
            code, _, error = await post(f"{url}/decode", empty, token=token, host=host or " ")
            assert code == 403 and "Host" in error["error"], host
        for given, where in ((None, "/decode"), ("nope", "/decode"), (None, f"/x{token}/decode")):
            code, _, error = await post(f"{url}{where}", empty, token=given)
            assert code == 401, (given, where)
    finally:
        server.shutdown()
        server.server_close()


# -------------------------------------------------------------------- with the codec key


async def test_encrypted_history_holds_no_secret_and_the_ui_codec_server_decodes_it(
    tmp_path: Path, runbooks: Path, secret: str
) -> None:
    """`sternway dev --ui-codec-endpoint` with a key, `sternway codec-server`, the CLI."""
    keys = f"k1:{KEY_A}"
    port, ui_port, codec_port = free_port(), free_port(), free_port()
    codec_url = f"http://127.0.0.1:{codec_port}"
    token = f"codec-{uuid.uuid4().hex}"
    ui = f"http://localhost:{ui_port}"
    env = cli_env(
        f"localhost:{port}",
        "sternway",
        STERNWAY_CODEC_KEYS=keys,
        STERNWAY_ACTIONS_PATH=str(runbooks),
        STERNWAY_CODEC_TOKEN=token,
    )
    # The Web UI sends no token of its own (only an OIDC login's): the endpoint carries it.
    dev = await spawn(
        env, "dev", "--db", str(tmp_path / "dev.db"), "--port", str(port),
        "--ui-port", str(ui_port), "--ui-codec-endpoint", f"{codec_url}/{token}",
    )  # fmt: skip
    codec_server = await spawn(env, "codec-server", "--port", str(codec_port), "--cors-origin", ui)
    root = tmp_path / "root"
    root.mkdir()
    try:
        settings = json.loads(await until_http(f"http://127.0.0.1:{ui_port}/api/v1/settings"))
        assert settings["Codec"]["Endpoint"] == f"{codec_url}/{token}"
        health = json.loads(await until_http(f"{codec_url}/health"))
        assert health == {"ok": True, "keys": ["k1"], "current": "k1"}

        submitted = await sternway(
            env, "submit", "secret-use", "--arg", f"root={root}", "--arg", f"token={secret}",
            "--requestor", "alice", "--wait", "--json", timeout=90,
        )  # fmt: skip
        assert submitted.code == 0, submitted.out + submitted.err
        status = RunStatus.model_validate(submitted.json())
        check_masked(status, secret, root)
        run_id = status.run_id
        shown = await sternway(env, "status", run_id, "--json")
        assert shown.code == 0 and secret not in shown.out
        assert RunStatus.model_validate(shown.json()).job("echo").output["token"] == MASK

        # A client without the key (the server's view) sees ciphertext only.
        plain = await Client.connect(f"localhost:{port}")
        workflow = plain.get_workflow_handle(run_id)
        history = await workflow.fetch_history()
        assert secret.encode() not in raw_bytes(history)
        assert secret not in history.to_json()
        found = [
            (path, p)
            for event in history.events
            for path, p in payloads_in(event)
            if ".search_attributes" not in path
        ]
        clear = [
            path
            for path, p in found
            # The SDK core's own local-activity marker record (ids and times, no user data).
            if p.metadata.get("encoding") != ENCODING
            and not path.startswith(".marker_recorded_event_attributes.details[data]")
        ]
        assert found and not clear, clear
        description = await workflow.describe()
        raw_memo = description.raw_description.workflow_execution_info.memo
        assert secret.encode() not in raw_memo.SerializeToString()
        assert all(p.metadata["encoding"] == ENCODING for p in raw_memo.fields.values())
        attributes = description.raw_description.workflow_execution_info.search_attributes
        assert secret.encode() not in attributes.SerializeToString()
        assert description.typed_search_attributes  # SternwayState and SternwayRequestor

        # Without the key the CLI says so, in one line.
        no_key = {k: v for k, v in env.items() if k != "STERNWAY_CODEC_KEYS"}
        refused = await sternway(no_key, "status", run_id)
        assert refused.code == 2 and "Traceback" not in refused.err
        assert "no codec key is configured" in refused.err

        # The Web UI asks the codec server: an authorised viewer reads the input, secret and all.
        started = history.events[0].workflow_execution_started_event_attributes
        request = {"payloads": [as_json(started.input.payloads[0])]}
        code, headers, decoded = await post(f"{codec_url}/{token}/decode", request, origin=ui)
        assert code == 200 and headers["Access-Control-Allow-Origin"] == ui
        [payload] = decoded["payloads"]
        assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
        run_input = json.loads(base64.b64decode(payload["data"]))
        assert run_input["args"]["token"] == secret and run_input["requestor"] == "alice"
        code, _, encoded = await post(f"{codec_url}/encode", decoded, token=token)
        assert code == 200
        assert base64.b64decode(encoded["payloads"][0]["metadata"]["encoding"]) == ENCODING
        code, _, again = await post(f"{codec_url}/default/decode", encoded, token=token)
        assert code == 200 and again == decoded
        code, headers, _ = await post(
            f"{codec_url}/decode", {"payloads": []}, "http://evil", token=token
        )
        assert code == 200 and "Access-Control-Allow-Origin" not in headers
        code, _, error = await post(f"{codec_url}/decode", {"payloads": "nope"}, token=token)
        assert code == 400 and "error" in error
        # Refused: no token, a wrong one, and a Host that is not the bind address (a rebinding
        # page's request names its own domain), token or not.
        for url, given in ((f"{codec_url}/decode", None), (f"{codec_url}/x/decode", "wrong")):
            code, _, error = await post(url, request, token=given)
            assert code == 401 and "token" in error["error"]
        code, _, error = await post(
            f"{codec_url}/decode", request, token=token, host=f"evil.example:{codec_port}"
        )
        assert code == 403 and "payloads" not in error
    finally:
        for process in (codec_server, dev):
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        _, codec_err = await asyncio.wait_for(codec_server.communicate(), 30)
        _, dev_err = await asyncio.wait_for(dev.communicate(), 30)
    assert codec_server.returncode == 0, codec_err.decode()
    assert f"codec server at {codec_url}" in codec_err.decode()
    assert dev.returncode == 0, dev_err.decode()
    assert secret not in dev_err.decode()


# --------------------------------------------------------------------------- without a key


async def test_without_a_codec_secrets_stay_out_of_status_memo_attributes_and_logs(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, runbooks: Path, secret: str
) -> None:
    address = dev_env.client.service_client.config.target_host
    env = cli_env(address, task_queue, STERNWAY_ACTIONS_PATH=str(runbooks))
    registry = load_registry(modules=[], folders=[runbooks])
    root = tmp_path / "root"
    root.mkdir()
    worker = await spawn(env, "worker")
    try:
        handle = await submit(
            dev_env.client,
            "secret-use",
            {"root": str(root), "token": secret, "linger": "3"},
            task_queue=task_queue,
            registry=registry,
            requestor="bob",
        )
        # The live detail of a running shell job is the last line it printed.
        details: dict[str, str] = {}
        for _ in range(100):
            details = await handle.live_details()
            if "use" in details:
                break
            await asyncio.sleep(0.1)
        assert details.get("use") == f"calling with {MASK}"
        status = await asyncio.wait_for(handle.wait(), 60)
        shown = await sternway(env, "status", handle.run_id, "--json")
        logs = await sternway(env, "logs", handle.run_id)
        raw = await dev_env.client.get_workflow_handle(handle.run_id).query("status")
    finally:
        worker.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(worker.communicate(), 30)
    check_masked(status, secret, root)
    assert shown.code == 0 and secret not in shown.out
    assert logs.code == 0 and secret not in logs.out and f"rejected token {MASK}" in logs.out
    assert secret not in json.dumps(raw)
    description = await dev_env.client.get_workflow_handle(handle.run_id).describe()
    assert (await description.memo())["args"]["token"] == MASK
    assert secret not in json.dumps(await description.memo())
    info = description.raw_description.workflow_execution_info
    assert secret.encode() not in info.search_attributes.SerializeToString()
    # The worker logged the failed attempts (masked), and never the secret.
    worker_log = err.decode()
    assert worker.returncode == 0, worker_log
    assert f"rejected token {MASK}" in worker_log and "job attempt failed" in worker_log
    assert secret not in worker_log
    # Without a codec the history itself holds the secret (the run input, job inputs): that is
    # what the codec is for.
    history = await dev_env.client.get_workflow_handle(handle.run_id).fetch_history()
    assert secret.encode() in raw_bytes(history)


async def test_a_run_started_by_any_client_masks_its_memo(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, runbooks: Path, secret: str
) -> None:
    """No registry at submit time: the workflow writes the (masked) memo itself."""
    from sternway.worker import create_worker

    registry = load_registry(modules=[], folders=[runbooks])
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        handle = await submit(
            dev_env.client,
            "secret-use",
            {"root": str(tmp_path), "token": secret},
            task_queue=task_queue,
        )
        status = await RunHandle(dev_env.client, handle.run_id).wait()
    assert status.state == "COMPLETED"
    memo = await (await dev_env.client.get_workflow_handle(handle.run_id).describe()).memo()
    assert memo["args"]["token"] == MASK and secret not in json.dumps(memo)


CHUNKED = """
name: secret-fanout
description: A large each (small chunks here) whose items use a secret
args:
  required:
    - {name: root, type: str}
    - {name: token, type: secret}
jobs:
  - name: call
    each: {items: [a, b, c, d, e], as: host, chunk_size: 2, concurrency: 2}
    run: shell
    with:
      argv:
        - sh
        - -c
        - 'printf %s "$1" > "$2/$3"; echo "$3 called with $1"'
        - call
        - "${{ args.token }}"
        - "${{ args.root }}"
        - "${{ host }}"
  - {name: after, after: [call], run: noop, with: {note: "done with ${{ args.token }}"}}
"""


async def test_chunk_runs_of_a_large_each_mask_the_secret_too(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path, secret: str
) -> None:
    """Chunks get the run's args and masked args, and mask the same secrets as their parent."""
    from sternway.worker import create_worker

    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "secret-fanout.yaml").write_text(CHUNKED)
    registry = load_registry(modules=[], folders=[folder])
    root = tmp_path / "root"
    root.mkdir()
    async with create_worker(dev_env.client, registry, task_queue=task_queue):
        handle = await submit(
            dev_env.client,
            "secret-fanout",
            {"root": str(root), "token": secret},
            task_queue=task_queue,
            registry=registry,
        )
        status = await asyncio.wait_for(handle.wait(), 90)
        chunks = status.job("call").output["chunks"]
        views = [
            await dev_env.client.get_workflow_handle(chunk).query("status", result_type=RunStatus)
            for chunk in chunks
        ]
    assert status.state == "COMPLETED", status.model_dump_json(indent=1)
    assert len(chunks) == 3  # 5 items in chunks of 2
    assert all((root / host).read_text() == secret for host in "abcde")  # jobs saw the secret
    assert secret not in status.model_dump_json()
    assert status.job("after").output == {"note": f"done with {MASK}"}
    items = [job for view in views for job in view.jobs if job.name.startswith("call[")]
    assert sorted(job.name for job in items) == [f"call[{host}]" for host in "abcde"]
    for view in views:
        assert secret not in view.model_dump_json()
        assert view.args["token"] == MASK
    for job in items:
        assert job.state == "COMPLETED"
        assert job.output["stdout"] == f"{job.name[5]} called with {MASK}\n"


# ------------------------------------------------------------------ cuts, escapes and each

CUTS = """
name: secret-cuts
description: Print a secret where Sternway cuts text, and fan out over it
args:
  required:
    - {name: token, type: secret}
    - {name: key, type: secret, desc: a secret that would make a fine instance name}
jobs:
  - name: cut
    each: {items: ITEMS, as: k, concurrency: 50}
    continue_on_error: true
    run: shell
    with: {argv: [PYTHON, -c, SCRIPT, "${{ args.token }}", "${{ k }}"]}
  - name: eachleak
    each: {items: "${{ ['plain', args.key[2:10]] }}", as: t}
    run: noop
    with: {note: a slice of a secret is masked nowhere, so it is not shown here}
  - name: eachwhole
    each: {items: "${{ [args.key] }}", as: t}
    run: noop
    with: {t: "${{ t }}"}
  - name: escaped
    after: [eachleak, eachwhole]
    continue_on_error: true
    run: shell
    with: {argv: ["${{ args.token }}"]}
"""
# Job k prints its secret so that every cut falls at every offset of it: the live detail and the
# error (the last line, cut at 200 characters) start it at 164 + k, the 4 KiB stdout tail starts
# k - 1 characters before its end.
CUT_SCRIPT = """
import sys, time
secret, k = sys.argv[1], int(sys.argv[2])
line = "x" * (164 + k) + secret + "y" * 8
sys.stdout.write(secret + "\\n" + "z" * (4094 - len(line) - k) + "\\n" + line + "\\n")
sys.stdout.flush()
time.sleep(2.5)
sys.stderr.write(line + "\\n")
sys.exit(1)
"""
# No hex digit, so that no id or hash in what is checked can look like a piece of it by chance;
# the quote and the backslash make its repr() and JSON forms differ from it.
SECRET_CHARS = "GHJKLMNPQRSTUVWXYZghjkmnpqrstuvwxyz"


def pieces_in(text: str, secret: str) -> list[str]:
    """The pieces of six characters of ``secret`` that show in ``text``."""
    return sorted({secret[i : i + 6] for i in range(len(secret) - 5)} & _windows(text))


def _windows(text: str) -> set[str]:
    return {text[i : i + 6] for i in range(len(text) - 5)}


def test_escaped_forms_are_masked_and_no_cut_leaves_a_piece() -> None:
    """The helpers every cut goes through, at every offset and from both ends."""
    secret = "S'q\\\"v\x99 &é/KLMNpqrs"
    forms = [repr(secret), repr([secret]), json.dumps({"a": secret})]
    forms += [json.dumps(secret, ensure_ascii=False), urllib.parse.quote(secret)]
    for shown in [*forms, urllib.parse.quote_plus(secret)]:
        assert mask_secrets(shown, [secret]).count(MASK) == 1, shown
    text = "x" * 50 + secret + "y" * 50
    for limit in range(len(text) + 1):
        for keep_end in (False, True):
            cut = clip_masked(text, [secret], limit, keep_end=keep_end)
            assert len(cut) <= max(limit, len(MASK) + limit) and not pieces_in(cut, secret)
    for start in range(1, len(secret)):  # a stream cut somewhere inside the secret
        tail = mask_fragments(secret[start:] + "z" * 9, [secret], start=True, end=False)
        head = mask_fragments("z" * 9 + secret[:start], [secret], start=False, end=True)
        assert not pieces_in(tail, secret) and not pieces_in(head, secret), start
    assert mask_fragments("xxKLMNpq", [secret], start=True, end=False) == "xxKLMNpq"


async def test_no_cut_escape_or_each_instance_shows_a_piece_of_a_secret(
    dev_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """Must-show: a secret at every offset of a live detail, an error and a stdout tail; in a
    repr()-escaped error; as an each item. With the codec on, nothing in status, logs, the worker
    log or the raw history holds six characters of it."""
    import random
    import sys

    secret = "".join(random.choice(SECRET_CHARS) for _ in range(30)) + "'q\\Zk-"
    key = "".join(random.choice(SECRET_CHARS) for _ in range(20))
    offsets = list(range(len(secret) + 3))
    folder = tmp_path / "runbooks"
    folder.mkdir()
    text = CUTS.replace("ITEMS", json.dumps(offsets)).replace("PYTHON", json.dumps(sys.executable))
    (folder / "secret-cuts.yaml").write_text(text.replace("SCRIPT", json.dumps(CUT_SCRIPT)))
    keys = f"k1:{KEY_A}"
    address = dev_env.client.service_client.config.target_host
    env = cli_env(address, task_queue, STERNWAY_ACTIONS_PATH=str(folder), STERNWAY_CODEC_KEYS=keys)
    run_id = f"cuts-{uuid.uuid4().hex[:8]}"
    keyed = await Client.connect(
        address, data_converter=data_converter(AesGcmCodec(load_keys(env) or {}))
    )
    worker = await spawn(env, "worker")
    live: list[str] = []
    try:
        submitted = await sternway(
            env,
            "submit",
            "secret-cuts",
            "--arg",
            f"token={secret}",
            "--arg",
            f"key={key}",
            "--id",
            run_id,
        )
        assert submitted.code == 0, submitted.out + submitted.err
        handle = RunHandle(keyed, run_id)
        for _ in range(200):  # the live details, while the jobs run
            live.extend((await handle.live_details()).values())
            if len(live) >= len(offsets):
                break
            await asyncio.sleep(0.1)
        status = await asyncio.wait_for(handle.wait(), 120)
        shown = await sternway(env, "status", run_id, "--json")
        logs = await sternway(env, "logs", run_id)
    finally:
        worker.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(worker.communicate(), 30)
    worker_log = err.decode()
    assert worker.returncode == 0, worker_log
    history = await dev_env.client.get_workflow_handle(run_id).fetch_history()
    seen = {
        "status": status.model_dump_json(),
        "status --json": shown.out,
        "logs": logs.out,
        "live details": "\n".join(live),
        "worker log": worker_log,
        "raw history": raw_bytes(history).decode("latin-1"),
        "history json": history.to_json(),
    }
    assert shown.code == 0 and logs.code == 0, shown.err + logs.err
    leaks = {where: pieces_in(text, secret) + pieces_in(text, key) for where, text in seen.items()}
    assert not any(leaks.values()), leaks
    cut = [job for job in status.jobs if job.name.startswith("cut[")]
    assert len(cut) == len(offsets) and all(job.state == "FAILED" for job in cut)
    # The cuts happened where they were meant to: around the secret, which is masked.
    assert any(MASK in detail for detail in live), live
    assert all(job.error is not None and "xxx" in job.error.message for job in cut)
    assert all(MASK in job.log[0].stdout_tail for job in cut if job.log[0].stdout_tail)
    # The each over the secret (or a slice of it) goes by index; the one over offsets by item.
    names = {job.name for job in status.jobs}
    assert {"eachleak[0]", "eachleak[1]", "eachwhole[0]", "cut[0]", f"cut[{offsets[-1]}]"} <= names
    escaped = status.job("escaped")
    assert escaped.error is not None and MASK in escaped.error.message
