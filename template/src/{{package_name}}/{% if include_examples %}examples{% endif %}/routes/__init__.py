"""The example endpoints, one module per resource."""

from fastapi import APIRouter

from . import documents, processing, projects, reviews, users

router = APIRouter()
for module in (users, projects, reviews, documents, processing):
    router.include_router(module.router)
