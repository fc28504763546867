"""The tests' view of stored contents, wherever they are: a pathlib.Path
into the data directory (file: store), or, when the suite runs on S3
(BULWARK_TEST_BLOBS=s3), an S3Path that answers the same questions
(exists, read_bytes, iterdir, stat().st_size, /) from the bucket through
our own signed requests (s3sign.py), so that a test reads the same either
way."""

import os
import stat as stat_mod
import urllib.parse


class _Stat:
    def __init__(self, size, is_dir):
        self.st_size = size
        self.st_mode = (stat_mod.S_IFDIR | 0o755) if is_dir else (stat_mod.S_IFREG | 0o644)


class S3Path:
    """A key (or a "directory": a key prefix) in the daemon's bucket,
    below its prefix."""

    def __init__(self, srv, bucket, prefix, key):
        self.srv, self.bucket, self.prefix = srv, bucket, prefix
        self.key = key.strip("/")

    def __truediv__(self, name):
        return S3Path(self.srv, self.bucket, self.prefix, self.key + "/" + str(name))

    def __str__(self):
        return "s3://%s/%s%s" % (self.bucket, self.prefix, self.key)

    __repr__ = __str__

    def __eq__(self, other):
        return isinstance(other, S3Path) and str(self) == str(other)

    def __hash__(self):
        return hash(str(self))

    @property
    def name(self):
        return self.key.rsplit("/", 1)[-1]

    @property
    def parent(self):
        return S3Path(self.srv, self.bucket, self.prefix, self.key.rsplit("/", 1)[0])

    def _full(self):
        return self.prefix + self.key

    def _head(self):
        st, h, _ = self.srv.request(
            "HEAD", "/%s/%s" % (self.bucket, urllib.parse.quote(self._full(), safe="/~")))
        return int(h.get("content-length", "0")) if st == 200 else None

    def _under(self):
        return self.srv.keys(self.bucket, self._full() + "/")

    def is_file(self):
        return self._head() is not None

    def is_dir(self):
        return bool(self._under())

    def exists(self):
        return self.is_file() or self.is_dir()

    def is_symlink(self):
        return False

    def stat(self):
        size = self._head()
        if size is not None:
            return _Stat(size, False)
        if self.is_dir():
            return _Stat(0, True)
        raise FileNotFoundError(str(self))

    lstat = stat

    def read_bytes(self):
        data = self.srv.get(self.bucket, self._full())
        if data is None:
            raise FileNotFoundError(str(self))
        return data

    def unlink(self):
        st, _, body = self.srv.request(
            "DELETE", "/%s/%s" % (self.bucket, urllib.parse.quote(self._full(), safe="/~")))
        if st not in (200, 204):
            raise OSError("DELETE %s: %d %r" % (self, st, body[:200]))

    def write_bytes(self, data):
        st, _, body = self.srv.request(
            "PUT", "/%s/%s" % (self.bucket, urllib.parse.quote(self._full(), safe="/~")),
            body=bytes(data))
        if st != 200:
            raise OSError("PUT %s: %d %r" % (self, st, body[:200]))
        return len(data)

    def open(self, mode="rb"):
        assert mode == "rb", mode
        import io

        return io.BytesIO(self.read_bytes())

    def iterdir(self):
        base = self._full() + "/"
        seen = []
        for k in self.srv.keys(self.bucket, base):
            first = k[len(base):].split("/", 1)[0]
            if first not in seen:
                seen.append(first)
        return iter([self / n for n in sorted(seen)])


def listdir(path):
    return sorted(p.name for p in path.iterdir()) if isinstance(path, S3Path) \
        else os.listdir(path)
