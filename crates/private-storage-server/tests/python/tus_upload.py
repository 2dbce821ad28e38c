"""Uploads FILE to ENDPOINT with tuspy in CHUNK-byte chunks, resuming the upload of the same
file that a previous run recorded in STORE. Prints `start <offset>`, `accepted <bytes>` after
each acknowledged chunk, `done <url>` at the end.

  python tus_upload.py ENDPOINT TOKEN FILE STORE CHUNK
"""
import sys

from tusclient import client
from tusclient.storage import filestorage

endpoint, token, path, store, chunk = sys.argv[1:]
tus = client.TusClient(endpoint, headers={"Authorization": f"Bearer {token}"})
uploader = tus.uploader(
    path,
    chunk_size=int(chunk),
    store_url=True,
    url_storage=filestorage.FileStorage(store),
    metadata={"filename": "big.bin"},
)
print("start", uploader.offset, flush=True)
while uploader.offset < uploader.get_file_size():
    uploader.upload_chunk()
    print("accepted", uploader.offset, flush=True)
print("done", uploader.url, flush=True)
