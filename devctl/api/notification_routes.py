"""GET /notifications and POST /notifications/read (being built; see issue 12)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
