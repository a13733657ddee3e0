"""A stand-in for the Hugging Face hub on 127.0.0.1, for the `embd pull` tests.

Serves the hub's URL layout from files on disk (and in memory), with the
headers huggingface_hub and `embd pull` read:

  GET  /api/models/ORG/NAME/revision/REV    {"id", "sha", "siblings": [{"rfilename"}], ...}
  GET  /api/models/ORG/NAME/tree/REV[/PATH]  [{"type", "oid", "size", "path", "lfs"}]
  HEAD|GET /ORG/NAME/resolve/REV/FILE        a small file: 200 with ETag (its git blob id),
                                             X-Repo-Commit, Content-Length, Range support;
                                             an LFS file: 302 to /cdn/SHA256 with
                                             X-Linked-Etag (its sha256), X-Linked-Size,
                                             X-Repo-Commit, as the real hub redirects to its CDN
  HEAD|GET /cdn/SHA256                       the LFS file's bytes, Range support, on
                                             another host (127.0.0.2, else localhost)

Errors as the hub answers them: 404 with X-Error-Code RepoNotFound,
RevisionNotFound or EntryNotFound; 401 for a private repository without the
right bearer token; 403 GatedRepo. Faults for the CDN's answers are set on
the Hub object between requests: cut_every (close the connection after that
many body bytes of every answer), cut_once (the same, for the next answer
only), corrupt (one byte flipped), extra (bytes more than announced),
pause_at (send that many bytes, set `paused`, wait for `resume`).
Every request is logged in Hub.log as (method, path, Range, Authorization).

Run on its own to serve a model folder: python3 hub_server.py DIR ORG/NAME.
"""
import hashlib
import json
import os
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".h5", ".msgpack", ".ot", ".pt", ".gguf")
CHUNK = 1 << 20


def git_blob_id(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Entry:
    """One file of a repository: bytes in memory or a file on disk."""

    def __init__(self, name, path=None, data=None):
        self.name, self.path, self.data = name, path, data
        self.size = os.path.getsize(path) if path else len(data)
        self.lfs = name.endswith(LFS_SUFFIXES)
        content = None if self.lfs else self.read(0, self.size)
        if self.lfs:
            h = hashlib.sha256()
            for off in range(0, self.size, 8 * CHUNK):
                h.update(self.read(off, min(8 * CHUNK, self.size - off)))
            self.sha256 = h.hexdigest()
            pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                       f"size {self.size}\n").encode()
            self.oid, self.pointer_size = git_blob_id(pointer), len(pointer)
        else:
            self.sha256, self.oid = None, git_blob_id(content)

    def read(self, off, n):
        if self.data is not None:
            return self.data[off:off + n]
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n)


class Repo:
    def __init__(self, repo_id, sha, entries, token=None, gated=False, branches=("main",)):
        self.id, self.sha, self.token, self.gated = repo_id, sha, token, gated
        self.files = {e.name: e for e in entries}
        self.branches = set(branches)

    @staticmethod
    def from_folder(repo_id, folder, sha, extra=None, skip=(".embd-fetch-model",), **kw):
        entries = []
        for root, _, names in os.walk(folder):
            for n in sorted(names):
                p = os.path.join(root, n)
                rel = os.path.relpath(p, folder).replace(os.sep, "/")
                if rel not in skip:
                    entries.append(Entry(rel, path=p))
        for name, data in (extra or {}).items():
            entries.append(Entry(name, data=data))
        return Repo(repo_id, sha, entries, **kw)


class Hub:
    def __init__(self):
        self.repos = {}
        self.log = []
        self.lock = threading.Lock()
        self.cut_every = self.cut_once = self.pause_at = None
        self.corrupt = False
        self.extra = 0
        self.paused, self.resume = threading.Event(), threading.Event()
        self.sent = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The "CDN" LFS files are redirected to: another host, as on the real
        # hub, so that neither the bearer token nor huggingface_hub's HEAD
        # follows the redirect there.
        try:
            self.cdn_httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
            self.cdn_url = f"http://127.0.0.2:{self.cdn_httpd.server_address[1]}"
        except OSError:
            self.cdn_httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            self.cdn_url = f"http://localhost:{self.cdn_httpd.server_address[1]}"
        self.threads = []
        for srv in (self.httpd, self.cdn_httpd):
            srv.daemon_threads = True
            self.threads.append(threading.Thread(target=srv.serve_forever, daemon=True))

    def add(self, repo):
        self.repos[repo.id] = repo
        return repo

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.resume.set()
        for srv in (self.httpd, self.cdn_httpd):
            srv.shutdown()
            srv.server_close()

    def clear_faults(self):
        self.cut_every = self.cut_once = self.pause_at = None
        self.corrupt, self.extra = False, 0
        self.paused.clear()
        self.resume.clear()

    def requests(self, method=None, prefix=""):
        with self.lock:
            return [r for r in self.log
                    if (method is None or r[0] == method) and r[1].startswith(prefix)]

    # --- answers ------------------------------------------------------------------------

    @staticmethod
    def reply(h, status, body=b"", headers=None, head=False, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    def error(self, h, status, code, message, head):
        self.reply(h, status, {"error": message},
                   {"X-Error-Code": code, "X-Error-Message": message}, head)

    def authorised(self, h, repo, head):
        auth = h.headers.get("Authorization")
        if repo.gated:
            self.error(h, 403, "GatedRepo", f"Access to model {repo.id} is restricted and you "
                       "are not in the authorized list.", head)
            return False
        if repo.token and auth != f"Bearer {repo.token}":
            msg = ("Invalid credentials in Authorization header" if auth else
                   f"Access to model {repo.id} is restricted. You must have access to it and "
                   "be authenticated to access it.")
            self.error(h, 401, "RepoNotFound" if not auth else "", msg, head)
            return False
        return True

    def find(self, h, parts, head):
        """The repository named by parts[0:2] (or None, after answering 404)."""
        repo = self.repos.get("/".join(parts[:2])) if len(parts) >= 2 else None
        if repo is None:
            self.error(h, 404, "RepoNotFound", "Repository not found", head)
        return repo

    def revision_ok(self, h, repo, rev, head):
        if rev in repo.branches or rev == repo.sha:
            return True
        self.error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
        return False

    def handle(self, h, head):
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path)
        with self.lock:
            self.log.append((h.command, path, h.headers.get("Range"),
                             h.headers.get("Authorization")))
        try:
            if path.startswith("/api/models/"):
                self.api(h, path[len("/api/models/"):], urllib.parse.parse_qs(url.query), head)
            elif path.startswith("/cdn/"):
                self.cdn(h, path[len("/cdn/"):], head)
            else:
                self.resolve(h, url.path, head)
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True

    def api(self, h, rest, query, head):
        # ORG/NAME/revision/REV  or  ORG/NAME/tree/REV[/PATH] (REV quoted with safe="")
        raw = rest.split("/")
        if len(raw) < 4 or raw[2] not in ("revision", "tree"):
            return self.error(h, 404, "", "Not found", head)
        repo = self.find(h, raw, head)
        if repo is None or not self.authorised(h, repo, head):
            return
        rev = raw[3]
        if not self.revision_ok(h, repo, rev, head):
            return
        names = sorted(repo.files)
        if raw[2] == "revision":
            body = {"_id": "0" * 24, "id": repo.id, "modelId": repo.id, "sha": repo.sha,
                    "private": bool(repo.token), "gated": False, "disabled": False,
                    "downloads": 0, "likes": 0, "tags": [], "library_name": "sentence-transformers",
                    "lastModified": "2024-01-01T00:00:00.000Z",
                    "createdAt": "2024-01-01T00:00:00.000Z",
                    "siblings": [{"rfilename": n} for n in names]}
            return self.reply(h, 200, body, head=head)
        sub = "/".join(raw[4:])
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        out, dirs = [], set()
        for n in names:
            if sub and not n.startswith(sub + "/"):
                continue
            rel = n[len(sub) + 1:] if sub else n
            if "/" in rel:
                d = (sub + "/" if sub else "") + rel.split("/")[0]
                if d not in dirs:
                    dirs.add(d)
                    out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                "size": 0, "path": d})
                if not recursive:
                    continue
            e = repo.files[n]
            item = {"type": "file", "oid": e.oid, "size": e.size, "path": n}
            if e.lfs:
                item["lfs"] = {"oid": e.sha256, "size": e.size, "pointerSize": e.pointer_size}
            out.append(item)
        return self.reply(h, 200, out, head=head)

    def resolve(self, h, raw_path, head):
        # /ORG/NAME/resolve/REV/FILE (each part quoted)
        raw = raw_path.lstrip("/").split("/")
        if len(raw) < 5 or raw[2] != "resolve":
            return self.error(h, 404, "", "Not found", head)
        raw = [urllib.parse.unquote(p) for p in raw]
        repo = self.find(h, raw, head)
        if repo is None or not self.authorised(h, repo, head):
            return
        rev, name = raw[3], "/".join(raw[4:])
        if not self.revision_ok(h, repo, rev, head):
            return
        e = repo.files.get(name)
        if e is None:
            return self.error(h, 404, "EntryNotFound", f"{name} does not exist on {rev}", head)
        common = {"X-Repo-Commit": repo.sha, "Accept-Ranges": "bytes"}
        if e.lfs:
            loc = f"{self.cdn_url}/cdn/{e.sha256}"
            return self.reply(h, 302, b"", dict(common, **{
                "Location": loc, "ETag": f'"{e.oid}"', "X-Linked-Etag": f'"{e.sha256}"',
                "X-Linked-Size": str(e.size)}), head)
        self.send_bytes(h, e, dict(common, ETag=f'"{e.oid}"'), head, faults=False)

    def cdn(self, h, sha, head):
        for repo in self.repos.values():
            for e in repo.files.values():
                if e.sha256 == sha:
                    return self.send_bytes(h, e, {"ETag": f'"cdn-{sha[:16]}"'}, head, faults=True)
        self.error(h, 404, "", "Not found", head)

    def send_bytes(self, h, e, headers, head, faults):
        start, end, status = 0, e.size - 1, 200
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, _, b = rng[len("bytes="):].partition("-")
            start = int(a) if a else 0
            end = min(int(b), e.size - 1) if b else e.size - 1
            if start >= e.size:
                return self.reply(h, 416, b"", {"Content-Range": f"bytes */{e.size}"}, head)
            status = 206
        extra = self.extra if faults else 0
        n = end - start + 1
        h.send_response(status)
        h.send_header("Content-Type", "application/octet-stream")
        for k, v in headers.items():
            h.send_header(k, v)
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{end}/{e.size}")
        h.send_header("Content-Length", str(n + extra))
        h.end_headers()
        if head:
            return
        cut = None
        if faults:
            cut = self.cut_every
            if self.cut_once is not None:
                cut, self.cut_once = self.cut_once, None
        sent, off = 0, start
        while off <= end:
            k = min(CHUNK, end + 1 - off)
            if cut is not None:
                k = min(k, cut - sent)
            if faults and self.pause_at is not None and sent < self.pause_at:
                k = min(k, self.pause_at - sent)
            if k <= 0:
                break
            data = bytearray(e.read(off, k))
            mid = e.size // 2
            if faults and self.corrupt and off <= mid < off + k:
                data[mid - off] ^= 0x55
            h.wfile.write(data)
            sent += k
            off += k
            with self.lock:
                self.sent += k
            if faults and self.pause_at is not None and sent == self.pause_at:
                h.wfile.flush()
                self.paused.set()
                self.resume.wait(120)
        if off <= end:  # cut off: the body is shorter than Content-Length
            h.wfile.flush()
            h.close_connection = True
            return
        if extra:
            h.wfile.write(b"\0" * extra)


def main():
    folder, repo_id = sys.argv[1], sys.argv[2]
    hub = Hub()
    hub.add(Repo.from_folder(repo_id, folder, hashlib.sha1(repo_id.encode()).hexdigest()))
    hub.start()
    print(f"serving {folder} as {repo_id} on {hub.url}", flush=True)
    hub.threads[0].join()


if __name__ == "__main__":
    main()
