"""Dataset upload, validation, size cap, listing and deletion (in-process API on real Postgres)."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import zipfile
from pathlib import Path

from .conftest import auth
from .helpers import dataset_folder


def upload(client, key: str, data: bytes, name: str = "set.zip"):  # noqa: ANN001, ANN201
    return client.post("/api/v1/datasets", headers=auth(key), files={"file": (name, data, "application/zip")})


def test_upload_returns_count_and_layout(client, make_key, tiny_zip: Path, api_settings) -> None:
    key = make_key()
    response = upload(client, key, tiny_zip.read_bytes(), name="../../etc/My Set.zip")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["sample_count"] == 4
    assert body["layout"] == "jsonl" and body["kind"] == "vqa" and body["archive_format"] == "zip"
    assert body["name"] == "My Set.zip"  # display name only, path parts dropped
    assert response.headers["location"] == f"/api/v1/datasets/{body['id']}"
    # stored under a key we generated, not the file name
    stored = list((api_settings.storage_root / "datasets" / body["id"]).iterdir())
    assert [p.name for p in stored] == ["source.zip"]
    assert client.get(response.headers["location"], headers=auth(key)).json() == body


def test_upload_tar(client, make_key, tmp_path: Path) -> None:
    folder = dataset_folder(tmp_path / "set", n=3)
    target = tmp_path / "set.tar"
    with tarfile.open(target, "w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    response = upload(client, make_key(), target.read_bytes(), name="set.tar")
    assert response.status_code == 201, response.text
    assert response.json()["sample_count"] == 3 and response.json()["archive_format"] == "tar"


def test_bad_dataset_lists_problems(client, make_key, tmp_path: Path, api_settings) -> None:
    folder = dataset_folder(tmp_path / "bad", n=6)
    lines = (folder / "data.jsonl").read_text().splitlines()
    lines[1] = "{not json"
    record = json.loads(lines[2])
    record["image"] = "images/missing.png"
    lines[2] = json.dumps(record)
    # image bytes inlined (base64) where a path belongs; half an emoji; an integer int() refuses
    lines[3] = json.dumps({**record, "image": base64.b64encode(bytes(range(256)) * 20).decode()})
    lines[4] = json.dumps({**record, "image": json.loads(lines[0])["image"], "answer": "nice \ud83d"})
    lines[5] = lines[0][:-1] + ', "n": ' + "9" * 5000 + "}"
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, path.relative_to(folder).as_posix())
    before = set((api_settings.storage_root / "datasets").glob("*"))
    response = upload(client, make_key(), buffer.getvalue())
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"].startswith("dataset rejected:")
    lines_named = {p["line"] for p in body["problems"]}
    assert {2, 3, 4, 5, 6} <= lines_named, body
    assert all(p["file"] == "data.jsonl" for p in body["problems"] if p["line"] in (2, 3, 4, 5, 6))
    messages = json.dumps(body["problems"])
    assert "images/missing.png" in messages and "too long for a file path" in messages
    assert "invalid code point" in messages and "more than 4300 digits" in messages
    assert set((api_settings.storage_root / "datasets").glob("*")) == before  # nothing kept


def test_not_an_archive(client, make_key) -> None:
    response = upload(client, make_key(), b"hello world, not a zip", name="x.zip")
    assert response.status_code == 422
    assert response.json() == {"detail": "the uploaded file is not a .zip or .tar archive"}


def test_missing_file_field_and_wrong_content_type(client, make_key) -> None:
    key = make_key()
    response = client.post("/api/v1/datasets", headers=auth(key), files={"data": ("x.zip", b"PK\x03\x04")})
    assert response.status_code == 422 and "form field 'file' is missing" in response.json()["detail"]
    response = client.post("/api/v1/datasets", headers={**auth(key), "Content-Type": "application/json"}, content=b"{}")
    assert response.status_code == 422 and "multipart/form-data" in response.json()["detail"]


def test_upload_over_the_cap_is_413_and_leaves_nothing(client, make_key, api_settings) -> None:
    key = make_key()
    big = b"PK\x03\x04" + b"\0" * (api_settings.max_upload_bytes + 10)
    before = set((api_settings.storage_root / "datasets").glob("*"))
    # declared length over the cap: refused before reading
    response = upload(client, key, big)
    assert response.status_code == 413 and "larger than the limit" in response.json()["detail"]

    # no declared length (chunked): refused while streaming
    def chunks():  # noqa: ANN202
        boundary = b"XyZ"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n\r\n'
        for _ in range(api_settings.max_upload_bytes // 65536 + 3):
            yield b"\0" * 65536
        yield b"\r\n--" + boundary + b"--\r\n"

    response = client.post("/api/v1/datasets", headers={**auth(key), "Content-Type": "multipart/form-data; boundary=XyZ"},
                           content=chunks())
    assert response.status_code == 413, response.text
    assert set((api_settings.storage_root / "datasets").glob("*")) == before  # nothing left behind


def test_list_paginates_newest_first_and_delete(client, make_key, tiny_zip: Path) -> None:
    key = make_key()
    ids = [upload(client, key, tiny_zip.read_bytes(), name=f"s{i}.zip").json()["id"] for i in range(3)]
    page = client.get("/api/v1/datasets?limit=2", headers=auth(key)).json()
    assert page["count"] == 3 and [d["id"] for d in page["data"]] == ids[::-1][:2]
    page = client.get("/api/v1/datasets?offset=2&limit=2", headers=auth(key)).json()
    assert [d["id"] for d in page["data"]] == [ids[0]]
    assert client.get("/api/v1/datasets?limit=0", headers=auth(key)).status_code == 422
    for listing in ("datasets", "jobs"):  # an offset past any database integer: a 422, not a 500
        response = client.get(f"/api/v1/{listing}?offset=99999999999999999999", headers=auth(key))
        assert response.status_code == 422 and "offset" in response.text, response.text

    assert client.delete(f"/api/v1/datasets/{ids[0]}", headers=auth(key)).status_code == 204
    assert client.get(f"/api/v1/datasets/{ids[0]}", headers=auth(key)).status_code == 404
    assert client.delete(f"/api/v1/datasets/{ids[0]}", headers=auth(key)).status_code == 404
    assert client.get("/api/v1/datasets", headers=auth(key)).json()["count"] == 2


def test_delete_with_active_job_is_409(client, make_key, tiny_zip: Path) -> None:
    key = make_key()
    dataset = upload(client, key, tiny_zip.read_bytes()).json()
    job = client.post("/api/v1/jobs", headers=auth(key), json={"dataset_id": dataset["id"], "preset": "fast"})
    assert job.status_code == 202, job.text
    response = client.delete(f"/api/v1/datasets/{dataset['id']}", headers=auth(key))
    assert response.status_code == 409 and "cancel them first" in response.json()["detail"]
    client.post(f"/api/v1/jobs/{job.json()['id']}/cancel", headers=auth(key))
    assert client.delete(f"/api/v1/datasets/{dataset['id']}", headers=auth(key)).status_code == 204
    # the job survives its dataset
    assert client.get(f"/api/v1/jobs/{job.json()['id']}", headers=auth(key)).json()["dataset_id"] is None
