"""Flows the end-to-end tests run inside emulated ACI containers."""
import os
import sys
import time

from prefect import flow, get_run_logger


@flow
def hello():
    get_run_logger().info("Hello from ACI!")
    print("printed to stdout by the flow")


@flow
def failing():
    raise ValueError("this flow fails on purpose")


@flow
def hard_exit():
    # Dies without reporting a final state, like a container killed from outside.
    sys.stdout.flush()
    os._exit(3)


@flow
def sleepy(seconds: int = 300):
    get_run_logger().info("sleeping")
    time.sleep(seconds)


@flow
def until_file(path: str, timeout: int = 600):
    # Runs until the test creates `path`: a flow whose end the test controls, not a clock.
    get_run_logger().info("waiting for %s", path)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.2)
