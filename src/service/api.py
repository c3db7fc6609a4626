"""Every domain router. Each carries the ``/api`` prefix itself, so a route's template (logs, metrics) is whole."""

from fastapi import APIRouter

from service.users.router import router as users_router

api_router = APIRouter()
api_router.include_router(users_router)
