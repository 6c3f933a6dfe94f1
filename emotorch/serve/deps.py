"""What routes depend on, as FastAPI dependencies: the settings, the micro-batcher, the serving model's
description, the recommender and the caller's user. Tests swap any of them through
``app.dependency_overrides``."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from emotorch.recommend import Recommender
from emotorch.serve.batching import MicroBatcher
from emotorch.serve.metrics import Metrics
from emotorch.serve.schemas import ModelInfo
from emotorch.serve.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


def get_decodes(request: Request) -> asyncio.Semaphore:
    """How many uploads may be decoded at once (the rest wait): bounds the memory they take together."""
    return request.app.state.decodes


def get_model_info(request: Request) -> ModelInfo:
    return request.app.state.model_info


def get_recommender(request: Request) -> Recommender:
    return request.app.state.recommender


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]
DecodesDep = Annotated[asyncio.Semaphore, Depends(get_decodes)]
ModelInfoDep = Annotated[ModelInfo, Depends(get_model_info)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
