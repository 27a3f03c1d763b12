"""The bench server's settings: the product's, with the reference floors' URLs added."""

from agentidp.settings import *  # noqa: F403 - every product setting, unchanged

ROOT_URLCONF = "bench.floors"
