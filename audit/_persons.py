"""Which platform person ids belong to which person: the map a data-subject export needs.

The gateway records a read of someone's personal data with the id the platform uses in its
paths (``/api/schools/school-a/students/stu-1``: ``user.target.id = "stu-1"``, with
``labels.data_tenant = "school-a"``), while people log in, and ask for their data, as an
issuer-qualified user id (``issuer|subject``). Only the platform knows which of its person
records is which login: it keeps that link in its own user administration, also for pupils who
never logged in. So the platform provides the map, as a file the operator places and points
``audit.person_map_file`` at (refreshed by the platform's export job; re-read when it
changes):

.. code-block:: text

    user_id,tenant,platform_id
    https://idp.example|8f2c...,school-a,stu-1

``tenant`` is the tenant in whose paths the id appears (empty: the id is platform-wide and
matches under any tenant). One person may have several rows (several schools, several ids).
One (tenant, platform id) must never belong to two people: the file is refused, because an
export would then show one person another's reads.

Not recorded at login on purpose: the gateway cannot see a person's platform id at login, and a
pupil whose record a teacher read may never have logged in at all; the platform's own
administration is what a controller answering an access request can rely on.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from audit.errors import PersonMapInvalid

__all__ = [
    "PERSON_MAP_COLUMNS",
    "PersonDirectory",
    "PersonMap",
    "PersonMapFile",
    "PlatformId",
]

PERSON_MAP_COLUMNS: Final = ("user_id", "tenant", "platform_id")
_MAX_VALUE: Final = 512


@dataclass(frozen=True, slots=True, order=True)
class PlatformId:
    """A platform person id as it appears in paths, and the tenant it appears under
    (``""``: any tenant)."""

    tenant: str
    person_id: str


class PersonDirectory(Protocol):
    """Where an export looks up a person's platform ids."""

    #: Says where the map comes from (shown on the export's cover).
    source: str

    def platform_ids(self, user_id: str) -> tuple[PlatformId, ...]:
        """The platform ids of ``user_id`` (issuer-qualified), sorted; raises
        :class:`audit.errors.PersonMapInvalid` when the map cannot be read."""
        ...


class PersonMap:
    """A person map held in memory (from rows, or parsed from CSV text)."""

    def __init__(self, rows: Iterable[tuple[str, str, str]] = (), *, source: str = "") -> None:
        by_user: dict[str, set[PlatformId]] = {}
        owner: dict[PlatformId, str] = {}
        for number, (user_id, tenant, person_id) in enumerate(rows, start=1):
            where = f"{source or 'person map'} row {number}"
            _check(where, "user_id", user_id)
            _check(where, "platform_id", person_id)
            if tenant:
                _check(where, "tenant", tenant)
            issuer, bar, local = user_id.rpartition("|")
            if not (bar and issuer and local):
                raise PersonMapInvalid(f"{where}: user_id is not issuer|subject")
            platform = PlatformId(tenant, person_id)
            if owner.setdefault(platform, user_id) != user_id:
                raise PersonMapInvalid(
                    f"{where}: platform id {person_id!r} (tenant {tenant!r}) belongs to two users"
                )
            by_user.setdefault(user_id, set()).add(platform)
        self._by_user: Mapping[str, tuple[PlatformId, ...]] = {
            user: tuple(sorted(ids)) for user, ids in by_user.items()
        }
        self.source = source or "person map"

    @classmethod
    def from_csv(cls, text: str, *, source: str = "") -> PersonMap:
        """Parse ``user_id,tenant,platform_id`` CSV (with that header line)."""
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != PERSON_MAP_COLUMNS:
            raise PersonMapInvalid(
                f"{source or 'person map'}: the first line must be {','.join(PERSON_MAP_COLUMNS)}"
            )
        rows: list[tuple[str, str, str]] = []
        for number, row in enumerate(reader, start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(PERSON_MAP_COLUMNS):
                raise PersonMapInvalid(f"{source or 'person map'} row {number}: three columns")
            user_id, tenant, person_id = (cell.strip() for cell in row)
            rows.append((user_id, tenant, person_id))
        return cls(rows, source=source)

    def platform_ids(self, user_id: str) -> tuple[PlatformId, ...]:
        return self._by_user.get(user_id, ())

    def __len__(self) -> int:
        return len(self._by_user)


class PersonMapFile:
    """The platform's person map file, read at construction and again whenever it changes
    (its modification time, size or inode). A file that became unreadable or invalid raises
    :class:`PersonMapInvalid` on lookup: an export must not silently miss reads."""

    def __init__(self, *, path: Path | str) -> None:
        self._path = Path(path)
        self.source = f"person map file {self._path.name}"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._map = PersonMap(source=self.source)
        self._reload()

    def _reload(self) -> None:
        try:
            info = os.stat(self._path)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            if stamp == self._stamp:
                return
            text = self._path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PersonMapInvalid(f"{self.source}: unreadable ({type(exc).__name__})") from exc
        self._map = PersonMap.from_csv(text, source=self.source)
        self._stamp = stamp

    def platform_ids(self, user_id: str) -> tuple[PlatformId, ...]:
        with self._lock:
            self._reload()
            return self._map.platform_ids(user_id)


def _check(where: str, name: str, value: str) -> None:
    if not value or len(value) > _MAX_VALUE or not value.isprintable():
        raise PersonMapInvalid(f"{where}: {name} empty, too long or not printable")
