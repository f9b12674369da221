"""The reference route map (DESIGN.md §1) as a Starlette app returning plausible JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from demo_upstream._data import Store
from demo_upstream._identity import AssertionChecker, describe

Handler = Callable[[Request], Awaitable[JSONResponse]]


class _Api:
    def __init__(self, store: Store, checker: AssertionChecker | None) -> None:
        self.store = store
        self.checker = checker

    async def reply(self, request: Request, data: Any, status: int = 200) -> JSONResponse:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        body = {"data": data, "_gateway": await describe(headers, self.checker)}
        return JSONResponse(body, status_code=status)

    async def missing(self, request: Request, what: str) -> JSONResponse:
        return await self.reply(request, {"error": "not_found", "what": what}, 404)

    async def body(self, request: Request) -> dict[str, Any]:
        try:
            parsed = await request.json()
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}

    def me(self, request: Request) -> str:
        """The pupil this request is about: the demo maps every subject to stu-1."""
        return "stu-1" if request.headers.get("x-gateway-subject") else "anonymous"

    # public catalogue
    async def home(self, request: Request) -> JSONResponse:
        return await self.reply(
            request,
            {
                "platform": "Platform Onderwijs & Regio (demo)",
                "links": ["/activities", "/api/me", "/api/me/registrations"],
            },
        )

    async def activities(self, request: Request) -> JSONResponse:
        return await self.reply(request, list(self.store.activities.values()))

    async def activity(self, request: Request) -> JSONResponse:
        found = self.store.activities.get(request.path_params["id"])
        return await (self.reply(request, found) if found else self.missing(request, "activity"))

    # a pupil's own data
    async def profile(self, request: Request) -> JSONResponse:
        student = self.store.students.get(self.me(request))
        if student is None:
            return await self.missing(request, "profile")
        if request.method == "PUT":
            update = await self.body(request)
            student.update({k: v for k, v in update.items() if k in ("name", "class")})
        return await self.reply(request, student)

    async def my_registrations(self, request: Request) -> JSONResponse:
        me = self.me(request)
        if request.method == "POST":
            activity = str((await self.body(request)).get("activity", ""))
            if activity not in self.store.activities:
                return await self.reply(request, {"error": "unknown_activity"}, 422)
            reg = {
                "id": self.store.new_id("reg"),
                "student": me,
                "activity": activity,
                "status": "waiting",
            }
            self.store.registrations[reg["id"]] = reg
            return await self.reply(request, reg, 201)
        mine = [r for r in self.store.registrations.values() if r["student"] == me]
        return await self.reply(request, mine)

    async def my_registration(self, request: Request) -> JSONResponse:
        reg = self.store.registrations.get(request.path_params["id"])
        if reg is None or reg["student"] != self.me(request):
            return await self.missing(request, "registration")
        if request.method == "DELETE":
            del self.store.registrations[reg["id"]]
            return await self.reply(request, {"deleted": reg["id"]})
        return await self.reply(request, reg)

    # a school's data
    def _school_students(self, school: str) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.store.students.items() if v["school"] == school}

    async def students(self, request: Request) -> JSONResponse:
        school = request.path_params["school"]
        if school not in self.store.schools:
            return await self.missing(request, "school")
        return await self.reply(request, list(self._school_students(school).values()))

    async def student(self, request: Request) -> JSONResponse:
        found = self._school_students(request.path_params["school"]).get(request.path_params["id"])
        return await (self.reply(request, found) if found else self.missing(request, "student"))

    async def school_registrations(self, request: Request) -> JSONResponse:
        students = self._school_students(request.path_params["school"])
        regs = [r for r in self.store.registrations.values() if r["student"] in students]
        return await self.reply(request, regs)

    async def school_registration(self, request: Request) -> JSONResponse:
        students = self._school_students(request.path_params["school"])
        reg_id = request.path_params["id"]
        reg = self.store.registrations.get(reg_id)
        if request.method == "POST":  # the coordinator registers a pupil under a chosen id
            update = await self.body(request)
            if update.get("student") not in students or reg is not None:
                return await self.reply(request, {"error": "invalid_registration"}, 422)
            reg = {"id": reg_id, "status": "confirmed", **update}
            self.store.registrations[reg_id] = reg
            return await self.reply(request, reg, 201)
        if reg is None or reg["student"] not in students:
            return await self.missing(request, "registration")
        if request.method == "DELETE":
            del self.store.registrations[reg_id]
            return await self.reply(request, {"deleted": reg_id})
        status = (await self.body(request)).get("status")
        if status in ("waiting", "confirmed", "cancelled"):
            reg["status"] = status
        return await self.reply(request, reg)

    async def reports(self, request: Request) -> JSONResponse:
        students = self._school_students(request.path_params["school"])
        regs = [r for r in self.store.registrations.values() if r["student"] in students]
        return await self.reply(
            request,
            {
                "school": request.path_params["school"],
                "students": len(students),
                "registrations": len(regs),
                "confirmed": sum(r["status"] == "confirmed" for r in regs),
            },
        )

    # a supplier's data
    async def provider_activities(self, request: Request) -> JSONResponse:
        org = request.path_params["org"]
        if org not in self.store.providers:
            return await self.missing(request, "provider")
        if request.method == "POST":
            update = await self.body(request)
            act = {
                "id": self.store.new_id("act"),
                "provider": org,
                "title": str(update.get("title", "Nieuwe activiteit")),
                "kind": str(update.get("kind", "workshop")),
                "date": str(update.get("date", "2027-06-01")),
                "places": int(update.get("places", 10)),
            }
            self.store.activities[act["id"]] = act
            return await self.reply(request, act, 201)
        own = [a for a in self.store.activities.values() if a["provider"] == org]
        return await self.reply(request, own)

    async def provider_activity(self, request: Request) -> JSONResponse:
        act = self.store.activities.get(request.path_params["id"])
        if act is None or act["provider"] != request.path_params["org"]:
            return await self.missing(request, "activity")
        if request.method == "DELETE":
            del self.store.activities[act["id"]]
            return await self.reply(request, {"deleted": act["id"]})
        update = await self.body(request)
        act.update({k: v for k, v in update.items() if k in ("title", "date", "places", "kind")})
        return await self.reply(request, act)

    async def activity_registrations(self, request: Request) -> JSONResponse:
        act = self.store.activities.get(request.path_params["id"])
        if act is None or act["provider"] != request.path_params["org"]:
            return await self.missing(request, "activity")
        regs = [
            {"registration": r["id"], "student_name": self.store.students[r["student"]]["name"]}
            for r in self.store.registrations.values()
            if r["activity"] == act["id"] and r["student"] in self.store.students
        ]
        return await self.reply(request, regs)

    # platform administration
    async def admin_schools(self, request: Request) -> JSONResponse:
        return await self._admin(request, self.store.schools, "school")

    async def admin_providers(self, request: Request) -> JSONResponse:
        return await self._admin(request, self.store.providers, "org")

    async def _admin(
        self, request: Request, table: dict[str, dict[str, Any]], prefix: str
    ) -> JSONResponse:
        if request.method == "POST":
            update = await self.body(request)
            item = {"id": self.store.new_id(prefix), "name": str(update.get("name", "Nieuw"))}
            table[item["id"]] = item
            return await self.reply(request, item, 201)
        return await self.reply(request, list(table.values()))

    async def newsletters(self, request: Request) -> JSONResponse:
        update = await self.body(request)
        letter = {"id": self.store.new_id("news"), "subject": str(update.get("subject", ""))}
        self.store.newsletters.append(letter)
        return await self.reply(request, {**letter, "status": "queued"}, 202)


def create_app(*, checker: AssertionChecker | None = None) -> Starlette:
    """The demo platform; with ``checker`` it also verifies the gateway's assertion."""
    api = _Api(Store(), checker)
    r = Route
    return Starlette(
        routes=[
            r("/", api.home, methods=["GET"]),
            r("/activities", api.activities, methods=["GET"]),
            r("/activities/{id}", api.activity, methods=["GET"]),
            r("/api/me", api.profile, methods=["GET", "PUT"]),
            r("/api/me/registrations", api.my_registrations, methods=["GET", "POST"]),
            r("/api/me/registrations/{id}", api.my_registration, methods=["GET", "DELETE"]),
            r("/api/schools/{school}/students", api.students, methods=["GET"]),
            r("/api/schools/{school}/students/{id}", api.student, methods=["GET"]),
            r("/api/schools/{school}/registrations", api.school_registrations, methods=["GET"]),
            r(
                "/api/schools/{school}/registrations/{id}",
                api.school_registration,
                methods=["POST", "PUT", "DELETE"],
            ),
            r("/api/schools/{school}/reports", api.reports, methods=["GET"]),
            r(
                "/api/providers/{org}/activities",
                api.provider_activities,
                methods=["GET", "POST"],
            ),
            r(
                "/api/providers/{org}/activities/{id}",
                api.provider_activity,
                methods=["PUT", "DELETE"],
            ),
            r(
                "/api/providers/{org}/activities/{id}/registrations",
                api.activity_registrations,
                methods=["GET"],
            ),
            r("/api/admin/schools", api.admin_schools, methods=["GET", "POST"]),
            r("/api/admin/providers", api.admin_providers, methods=["GET", "POST"]),
            r("/api/admin/newsletters", api.newsletters, methods=["POST"]),
        ]
    )
