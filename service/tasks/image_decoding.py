"""Image decoding for the task API: off the event loop, bounded by a pixel budget, and memory
given back (glibc keeps freed memory in its arenas: `malloc_trim(0)` after a burst of decodes).
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
Converter = Callable[[Image.Image, str], T]  # of a decoded image and its file's name

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
    """Decodes uploads on `threads` threads (sized from the container's CPU limit) within a
    budget of `max_pixels` in flight: a decode takes ~12 bytes per pixel whatever the file size
    (a 170 KB PNG can take 480 MB). Larger images are refused from their header before."""

    def __init__(self, threads: int, max_pixels: int) -> None:
        self.budget = PixelBudget(max_pixels)
        self.running = 0  # decodes on a thread right now
        self._untrimmed = False  # a large decode ended since the last trim
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="image-decode")

    async def decode(
        self, upload: Upload, convert: Converter[T], *, max_pixels: int, timeout: float
    ) -> T:
        """`convert(image, file name)` of the decoded upload; 4xx for a bad file, 504 if the
        pixel budget has no room for it within `timeout` seconds."""
        probe = functools.partial(probe_image, upload, max_pixels=max_pixels)  # header only
        image = await asyncio.wrap_future(self._executor.submit(probe))
        pixels = image.width * image.height
        if not await self.budget.acquire(pixels, timeout):
            raise DeadlineExceededError(
                f"file {upload.name!r}: the request's deadline passed while it waited to be "
                f"decoded ({self.budget.in_use:,} pixels of other images were being decoded)"
            )
        loop = asyncio.get_running_loop()
        future = self._executor.submit(self._decode, image, upload.name, convert)
        # the budget is released when the decode ends, even if its request is cancelled first
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self.budget.release, pixels))
        return await asyncio.wrap_future(future)

    def _decode(self, image: Image.Image, name: str, convert: Converter[T]) -> T:
        large = image.width * image.height >= TRIM_MIN_PIXELS
        with self._lock:
            self.running += 1
        try:
            return convert(load_image(image, name), name)
        finally:
            image.close()  # frees the decoded pixels now, before a trim
            with self._lock:
                self.running -= 1
                self._untrimmed |= large
                # once per burst: after every decode, the next would fault its pages in again
                end_of_burst = self.running == 0 and self._untrimmed
                if end_of_burst:
                    self._untrimmed = False
            if end_of_burst and (trim := _malloc_trim()) is not None:
                trim(0)  # the C heap's free pages back to the kernel

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
