"""Minimisation on the OpenSearch node: a painless script for ``_update_by_query``.

The script leaves each document exactly as :func:`audit._opensearch._minimised` (the
client-side path) and :func:`audit._retention_log.minimised_form` (what retention records
hash) do: the key ``user_agent.original`` removed (absent, not null), ``source.ip``, when it is
a string, truncated to its network address (IPv4 /24, IPv6 /48) in the text Python's
``ipaddress`` gives, and ``audit.minimised`` set to ``true``. Documents are flat (dotted keys).

The address is parsed by the rules of Python's ``ipaddress`` (CPython 3.11
``IPv4Address``/``IPv6Address``: decimal octets without leading zeros, hextets of one to four
hex digits, at most one ``::``, an IPv4 tail, a ``%scope`` suffix that is dropped), so an address
Python would refuse is refused here too: the script throws, the update stops with that
document unchanged, and the store raises :class:`audit.errors.StoreError` (the client-side
path raised ``ValueError`` on such an address). A /48 network address is its first three
hextets followed by five zero hextets; Python compresses the longest run of zero hextets, which
is always the trailing one (at least five long, against at most two in front), so the text is
the hextets up to the last non-zero one of the three, then ``::`` (``::`` alone when all three
are zero). ``tests/audit/test_minimise.py`` checks the script against ``truncate_ip`` on the node
for generated addresses in every textual form.

Needs the ``lang-painless`` and ``reindex`` modules on the node (every full distribution has
them; ``tools/opensearch_node.py`` adds them to the integration-test distribution).
"""

from __future__ import annotations

from typing import Final

__all__ = ["MINIMISE_SCRIPT", "MODULES"]

#: The node modules the server-side path needs (``GET _nodes/plugins``, ``modules``).
MODULES: Final = frozenset({"lang-painless", "reindex"})

_SOURCE: Final = """
List split(String s, String sep) {
  List out = new ArrayList();
  int start = 0;
  int at = s.indexOf(sep, start);
  while (at >= 0) {
    out.add(s.substring(start, at));
    start = at + sep.length();
    at = s.indexOf(sep, start);
  }
  out.add(s.substring(start));
  return out;
}
long v4(String s) {
  List octets = split(s, '.');
  if (octets.size() != 4) { return -1L; }
  long value = 0L;
  for (int k = 0; k < 4; ++k) {
    String o = (String) octets.get(k);
    int n = o.length();
    if (n == 0 || n > 3) { return -1L; }
    int x = 0;
    for (int i = 0; i < n; ++i) {
      int c = o.charAt(i);
      if (c < 48 || c > 57) { return -1L; }
      x = x * 10 + (c - 48);
    }
    int first = o.charAt(0);
    if (x > 255 || (n > 1 && first == 48)) { return -1L; }
    value = value * 256L + x;
  }
  return value;
}
int hextet(String h) {
  int n = h.length();
  if (n == 0 || n > 4) { return -1; }
  int x = 0;
  for (int i = 0; i < n; ++i) {
    int c = h.charAt(i);
    int d = -1;
    if (c >= 48 && c <= 57) { d = c - 48; }
    else if (c >= 97 && c <= 102) { d = c - 87; }
    else if (c >= 65 && c <= 70) { d = c - 55; }
    if (d < 0) { return -1; }
    x = x * 16 + d;
  }
  return x;
}
int[] v6(String s) {
  List p = split(s, ':');
  if (p.size() < 3) { return null; }
  String last = (String) p.get(p.size() - 1);
  if (last.indexOf('.') >= 0) {
    long four = v4(last);
    if (four < 0L) { return null; }
    p.remove(p.size() - 1);
    p.add(Long.toHexString((four >> 16) & 65535L));
    p.add(Long.toHexString(four & 65535L));
  }
  if (p.size() > 9) { return null; }
  int skip = -1;
  for (int i = 1; i < p.size() - 1; ++i) {
    if (((String) p.get(i)).length() == 0) {
      if (skip >= 0) { return null; }
      skip = i;
    }
  }
  int hi = p.size();
  int lo = 0;
  if (skip >= 0) {
    hi = skip;
    lo = p.size() - skip - 1;
    if (((String) p.get(0)).length() == 0) {
      hi -= 1;
      if (hi != 0) { return null; }
    }
    if (((String) p.get(p.size() - 1)).length() == 0) {
      lo -= 1;
      if (lo != 0) { return null; }
    }
    if (8 - (hi + lo) < 1) { return null; }
  } else if (p.size() != 8) {
    return null;
  }
  int[] out = new int[8];
  for (int i = 0; i < hi; ++i) {
    int x = hextet((String) p.get(i));
    if (x < 0) { return null; }
    out[i] = x;
  }
  for (int i = 0; i < lo; ++i) {
    int x = hextet((String) p.get(p.size() - lo + i));
    if (x < 0) { return null; }
    out[8 - lo + i] = x;
  }
  return out;
}
String truncated(String ip) {
  String address = ip;
  int pct = ip.indexOf('%');
  if (pct >= 0) {
    String scope = ip.substring(pct + 1);
    if (scope.length() == 0 || scope.indexOf('%') >= 0) { return null; }
    address = ip.substring(0, pct);
  }
  if (address.indexOf('/') >= 0) { return null; }
  if (pct < 0 && address.indexOf(':') < 0) {
    long four = v4(address);
    if (four < 0L) { return null; }
    return ((four >> 24) & 255L) + '.' + ((four >> 16) & 255L) + '.' + ((four >> 8) & 255L)
      + '.0';
  }
  int[] h = v6(address);
  if (h == null) { return null; }
  int keep = 2;
  while (keep >= 0 && h[keep] == 0) { keep -= 1; }
  String text = '';
  for (int i = 0; i <= keep; ++i) {
    text += Integer.toHexString(h[i]) + ':';
  }
  return keep < 0 ? '::' : text + ':';
}
def ip = ctx._source['source.ip'];
if (ip instanceof String) {
  String cut = truncated((String) ip);
  if (cut == null) {
    throw new IllegalArgumentException('source.ip cannot be minimised: ' + ctx._id);
  }
  ctx._source['source.ip'] = cut;
}
ctx._source.remove('user_agent.original');
ctx._source['audit.minimised'] = true;
"""

#: The ``script`` of ``_update_by_query`` (inline: the node compiles it once and caches it).
MINIMISE_SCRIPT: Final = {"lang": "painless", "source": _SOURCE.strip()}
