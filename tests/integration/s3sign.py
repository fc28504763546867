"""S3 requests signed with AWS Signature Version 4, written from the AWS
documentation with nothing but the standard library: the tests' own view
of the bucket, independent of the daemon's libcurl code."""

import datetime
import hashlib
import hmac
import http.client
import urllib.parse
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def quote_key(key):
    return urllib.parse.quote(key, safe="/~")


def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def _canonical_query(query):
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{urllib.parse.quote(k, safe='~')}={urllib.parse.quote(v, safe='~')}"
                    for k, v in sorted(pairs))


def request(endpoint, region, access, secret, method, path, body=b"", headers=None,
            query="", timeout=60):
    """One signed request: (status, headers dict lower-cased, body)."""
    u = urllib.parse.urlsplit(endpoint)
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    hdrs = {k.lower(): str(v).strip() for k, v in (headers or {}).items()}
    hdrs["host"] = u.netloc
    hdrs["x-amz-date"] = amz_date
    hdrs["x-amz-content-sha256"] = payload
    names = sorted(hdrs)
    canonical = "\n".join([method, path, _canonical_query(query),
                           "".join(f"{n}:{hdrs[n]}\n" for n in names),
                           ";".join(names), payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = _sign(("AWS4" + secret).encode(), day)
    for part in (region, "s3", "aws4_request"):
        k = _sign(k, part)
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                             f"SignedHeaders={';'.join(names)}, Signature={sig}")
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path + ("?" + query if query else ""), body=body,
                     headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def list_keys(srv, bucket, prefix=""):
    out, token = {}, None
    while True:
        q = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if token:
            q["continuation-token"] = token
        st, _, body = srv.request("GET", "/" + bucket, query=urllib.parse.urlencode(q))
        assert st == 200, (st, body)
        root = ET.fromstring(body)
        for c in root.iter(NS + "Contents"):
            out[urllib.parse.unquote(c.find(NS + "Key").text)] = int(c.find(NS + "Size").text)
        if root.findtext(NS + "IsTruncated") != "true":
            return out
        token = root.findtext(NS + "NextContinuationToken")


def list_uploads(srv, bucket):
    st, _, body = srv.request("GET", "/" + bucket, query="uploads=")
    assert st == 200, (st, body)
    root = ET.fromstring(body)
    return [(u.findtext(NS + "Key"), u.findtext(NS + "UploadId"))
            for u in root.iter(NS + "Upload")]
