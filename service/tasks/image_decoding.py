"""Image decoding for the task API: off the event loop, bounded, and memory given back.

Decoding costs ~12 bytes per pixel whatever the file size (a 170 KB PNG can take 480 MB), so
decodes run on their own pool sized from the container's CPU limit, and hold a share of a pixel
budget (at least `max_image_pixels`, larger images being refused from their header): an image
waits in arrival order until its pixels fit, at most until its request's deadline (504). glibc
keeps freed memory in its arenas, so at the end of a burst of large decodes `malloc_trim(0)`
hands the free pages back.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from PIL import Image

from service.errors import DeadlineExceededError
from service.tasks.uploads import Upload, load_image, probe_image

T = TypeVar("T")

# A decode of fewer pixels (~50 MB of buffers) calls for no malloc_trim: glibc's own thresholds
# return what matters and a trim would cost more than it gives.
TRIM_MIN_PIXELS = 4_000_000


class PixelBudget:
    """At most `limit` pixels held at once; acquirers wait in arrival order, so a large image is
    not overtaken forever by small ones. Event-loop side only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def acquire(self, pixels: int, timeout: float) -> bool:
        """True once `pixels` are held; False if `timeout` seconds passed first."""
        if not self._waiters and self.in_use + pixels <= self.limit:
            self.in_use += pixels
            return True
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (pixels, granted)
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(granted), max(0.0, timeout))
            return True
        except TimeoutError:
            return self._give_up(waiter)
        except asyncio.CancelledError:
            if self._give_up(waiter):  # granted as the caller left: hand it on
                self.release(pixels)
            raise

    def _give_up(self, waiter: tuple[int, asyncio.Future[None]]) -> bool:
        """Leaves the queue; True if the pixels were granted meanwhile (the caller holds them)."""
        _, granted = waiter
        if granted.done():
            return True
        granted.cancel()
        self._waiters.remove(waiter)
        self._grant()  # the head may have been the one that did not fit
        return False

    def release(self, pixels: int) -> None:
        self.in_use -= pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiters:
            pixels, granted = self._waiters[0]
            if self.in_use + pixels > self.limit:
                return
            self._waiters.popleft()
            self.in_use += pixels
            granted.set_result(None)


class ImageDecoder:
    """Decodes uploads on `threads` threads within a budget of `max_pixels` in flight."""

    def __init__(self, threads: int, max_pixels: int) -> None:
        self.budget = PixelBudget(max_pixels)
        self.running = 0  # decodes on a thread right now
        self._untrimmed = False  # a large decode ended since the last trim
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="image-decode")

    async def decode(
        self,
        upload: Upload,
        convert: Callable[[Image.Image, str], T],
        *,
        max_pixels: int,
        timeout: float,
    ) -> T:
        """`convert(image, file name)` of the decoded upload; 4xx for a bad file, 504 if the
        pixel budget has no room for it within `timeout` seconds."""
        image = await self._run(probe_image, upload, max_pixels=max_pixels)  # header only
        pixels = image.width * image.height
        if not await self.budget.acquire(pixels, timeout):
            raise DeadlineExceededError(
                f"file {upload.name!r}: the request's deadline passed while it waited to be "
                f"decoded ({self.budget.in_use:,} pixels of other images were being decoded)"
            )
        # the budget is released when the decode ends, even if its request is cancelled first
        return await self._run(
            self._decode, image, upload.name, convert, release=lambda: self.budget.release(pixels)
        )

    def _decode(self, image: Image.Image, name: str, convert: Callable[[Image.Image, str], T]) -> T:
        pixels = image.width * image.height
        with self._lock:
            self.running += 1
        try:
            return convert(load_image(image, name), name)
        finally:
            image.close()  # frees the decoded pixels now, before a trim
            if self._finished(large=pixels >= TRIM_MIN_PIXELS):
                release_free_memory()

    def _finished(self, *, large: bool) -> bool:
        """Counts a decode out; True at the end of a burst with a large decode in it (trimming
        after every decode would make the next one fault its pages in again)."""
        with self._lock:
            self.running -= 1
            self._untrimmed |= large
            if self.running or not self._untrimmed:
                return False
            self._untrimmed = False
            return True

    async def _run(
        self,
        function: Callable[..., T],
        *args: object,
        release: Callable[[], None] | None = None,
        **kwargs: object,
    ) -> T:
        loop = asyncio.get_running_loop()
        future = self._executor.submit(functools.partial(function, *args, **kwargs))
        if release is not None:
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(release))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def release_free_memory() -> None:
    """Returns the C heap's free pages to the kernel (glibc only; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
