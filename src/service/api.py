"""Every domain router. Each carries the ``/api`` prefix itself, so a route's template (logs, metrics) is whole."""

from fastapi import APIRouter

from service.admin.router import router as admin_router
from service.articles.router import router as articles_router
from service.comments.router import router as comments_router
from service.profiles.router import router as profiles_router
from service.users.router import router as users_router

# In the order a request is matched against them: the routes most requested first (the home page's listing).
API_ROUTERS: tuple[APIRouter, ...] = (articles_router, comments_router, profiles_router, users_router, admin_router)
