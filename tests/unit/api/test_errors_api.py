"""Bad input: every rejection has the one error body, names the field and writes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from autoft_service.store import JobStore
from tests.suites.store_helpers import MINIMAL_SPEC

ERROR_KEYS = {"code", "message", "field", "details"}


def assert_error(r: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS
    assert body["error"]["code"] == code and body["error"]["message"]
    if field is not None:
        assert body["error"]["field"] == field
    return body["error"]


@pytest.mark.parametrize(
    ("content", "status", "code", "field"),
    [
        (b'{"name": "t1", "task": ', 400, "malformed_json", "body"),
        (b'{"name": NaN}', 400, "malformed_json", "body"),
        (b"\xff\xfe\x00", 400, "malformed_json", "body"),
        (b"", 422, "invalid_request", "body"),
        (b"[1, 2]", 422, "invalid_spec", "body"),
        (b'"a spec"', 422, "invalid_spec", "body"),
        (b"null", 422, "invalid_spec", "body"),
        (b'{"name": "t1", "task": {"name": "digits-shift"}, "budget": {"trials": "12"}}', 422, "invalid_spec", "budget.trials"),
        (b'{"name": "t1", "task": {"name": "digits-shift"}, "budget": {"trials": true}}', 422, "invalid_spec", "budget.trials"),
        (b'{"name": "t1", "task": {"name": "digits-shift"}, "budget": {"trials": 12.0}}', 422, "invalid_spec", "budget.trials"),
        (b'{"name": "t1", "task": {"name": "digits-shift"}, "search": {"seed": ["0", 3]}}', 422, "invalid_spec", None),
        (b'{"name": "t1", "task": {"name": "digits-shift"}, "final": {"steps": "600"}}', 422, "invalid_spec", "final.steps"),
        (b'{"name": 5, "task": {"name": "digits-shift"}}', 422, "invalid_spec", "name"),
        (b'{"name": "t1", "task": {"name": "digits-shift"}, "budget": {"trials": 0}}', 422, "invalid_spec", "budget.trials"),
        (b'{"name": "t1", "task": {"name": "digits-shift"}, "colour": 1}', 422, "invalid_spec", "colour"),
        (b'{"name": "t1", "task": {"name": "nope"}}', 422, "unknown_task", "task.name"),
        (b'{"name": "t1", "task": {"name": "os:system"}}', 422, "unknown_task", "task.name"),
        (
            b'{"name": "t1", "task": {"name": "digits-shift"}, "search": {"loss_terms": ["bogus"]}}',
            422, "unknown_loss_term", "search.loss_terms.0",
        ),
    ],
)  # fmt: skip
def test_bad_spec_bodies(
    client: TestClient,
    acme: dict[str, str],
    store: JobStore,
    content: bytes,
    status: int,
    code: str,
    field: str,
) -> None:
    r = client.post("/v1/jobs", content=content, headers={**acme, "Content-Type": "application/json"})
    assert_error(r, status, code, field)
    assert store.list_jobs(None) == ([], 0)


def test_spec_errors_list_every_field(client: TestClient, acme: dict[str, str]) -> None:
    r = client.post(
        "/v1/jobs",
        json={"name": "bad name!", "task": {"name": "digits-shift"}, "budget": {"trials": -1}},
        headers=acme,
    )
    err = assert_error(r, 422, "invalid_spec")
    assert {d["field"] for d in err["details"]} == {"name", "budget.trials"}


def test_oversized_body_by_content_length(client: TestClient, acme: dict[str, str], store: JobStore) -> None:
    big = {**MINIMAL_SPEC, "task": {"name": "digits-shift", "params": {"pad": "x" * 5000}}}
    err = assert_error(client.post("/v1/jobs", json=big, headers=acme), 413, "payload_too_large")
    assert err["details"] == {"max_bytes": 4096}
    assert store.list_jobs(None)[1] == 0


def test_oversized_body_streamed_without_content_length(
    client: TestClient, acme: dict[str, str], store: JobStore
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "t1", "task": {"name": "digits-shift"}, "pad": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    r = client.post("/v1/jobs", content=chunks(), headers={**acme, "Content-Type": "application/json"})
    assert r.request.headers.get("content-length") is None  # really streamed (chunked)
    assert_error(r, 413, "payload_too_large")
    assert store.list_jobs(None)[1] == 0


def test_body_under_the_limit_passes_through_the_limiter(client: TestClient, acme: dict[str, str]) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "t1", '
        yield b'"task": {"name": "digits-shift"}}'

    r = client.post("/v1/jobs", content=chunks(), headers=acme)
    assert r.status_code == 202 and r.json()["name"] == "t1"


def test_unknown_route_and_method_use_the_error_body(client: TestClient, acme: dict[str, str]) -> None:
    assert_error(client.get("/v1/nothing-here", headers=acme), 404, "not_found")
    r = client.delete("/v1/jobs", headers=acme)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, POST"


def test_bad_header_is_invalid_request(client: TestClient, acme: dict[str, str], store: JobStore) -> None:
    r = client.post("/v1/jobs", json=MINIMAL_SPEC, headers={**acme, "Idempotency-Key": "k" * 256})
    assert_error(r, 422, "invalid_request", "Idempotency-Key")
    assert store.list_jobs(None)[1] == 0


def test_image_spec_reading_outside_the_data_roots_is_refused(
    client: TestClient, acme: dict[str, str], store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.images.tiny_models import save_tiny_timm

    root = tmp_path / "datasets"  # the data root of the app's settings (data_dir=tmp_path)
    save_tiny_timm(root / "m")
    (root / "train").mkdir()
    here = {"format": "imagefolder", "path": "train"}
    spec = {
        "name": "img",
        "task": {"name": "image-classification", "params": {
            "model": {"family": "timm", "path": "m"},
            "data": {"id_train": here, "id_test": here, "ood_val": {"format": "csv", "path": "/etc/passwd"}},
        }},
    }  # fmt: skip
    err = assert_error(client.post("/v1/jobs", json=spec, headers=acme), 422, "invalid_spec")
    assert err["field"] == "task.params.data.ood_val.path" and "outside the data roots" in err["message"]
    spec["task"]["params"]["data"]["ood_val"] = here
    spec["task"]["params"]["model"]["path"] = "missing"
    err = assert_error(client.post("/v1/jobs", json=spec, headers=acme), 422, "invalid_spec")
    assert err["field"] == "task.params.model.path" and "does not exist" in err["message"]
    assert store.list_jobs(None)[1] == 0  # nothing was queued
    spec["task"]["params"]["model"]["path"] = "m"
    assert client.post("/v1/jobs", json=spec, headers=acme).status_code == 202


def test_image_spec_with_a_manifest_row_or_symlink_outside_the_roots_is_a_422(
    client: TestClient, acme: dict[str, str], store: JobStore, tmp_path: Path
) -> None:
    """Checked at submission, not when the job prepares: nothing is queued."""
    from workers.images.synthetic_data import make_image_folder, make_manifest
    from workers.images.tiny_models import save_tiny_timm

    root = tmp_path / "datasets"  # the data root of the app's settings (data_dir=tmp_path)
    save_tiny_timm(root / "m")
    make_image_folder(root / "train", ["a", "b"], 2, seed=0)
    make_manifest(root / "ood.csv", root / "ood", ["a", "b"], 2, seed=1)
    (root / "bad.csv").write_text((root / "ood.csv").read_text() + "/etc/passwd,a\n")
    here = {"format": "imagefolder", "path": "train"}
    spec = {
        "name": "img",
        "task": {"name": "image-classification", "params": {
            "model": {"family": "timm", "path": "m"},
            "data": {"id_train": here, "id_test": here, "ood_val": {"format": "csv", "path": "bad.csv"}},
        }},
    }  # fmt: skip
    err = assert_error(client.post("/v1/jobs", json=spec, headers=acme), 422, "invalid_spec")
    assert err["field"] == "task.params.data.ood_val.path" and "outside the data roots" in err["message"]
    spec["task"]["params"]["data"]["ood_val"] = {"format": "csv", "path": "ood.csv"}
    (root / "train" / "a" / "x.png").symlink_to("/etc/passwd")
    err = assert_error(client.post("/v1/jobs", json=spec, headers=acme), 422, "invalid_spec")
    assert err["field"] == "task.params.data.id_train.path" and "outside the data roots" in err["message"]
    spec["task"]["params"]["model"]["model_args"] = {"checkpoint_path": "/etc/passwd"}
    err = assert_error(client.post("/v1/jobs", json=spec, headers=acme), 422, "invalid_spec")
    assert err["field"] == "task.params.model.model_args.checkpoint_path"
    assert store.list_jobs(None)[1] == 0  # nothing was queued
    (root / "train" / "a" / "x.png").unlink()
    del spec["task"]["params"]["model"]["model_args"]
    assert client.post("/v1/jobs", json=spec, headers=acme).status_code == 202
