"""The one exception hierarchy of soci_lab.

Every failure a user can meet is a ``SociLabError`` whose ``str()`` is one clear line naming what was
wrong. Each ``Err…`` value of the seed (soci-snapshotter's ``fs`` package) has a class of its own here, so
callers can catch exactly the condition they care about. Rooms add classes here, grouped by room, rather
than defining private hierarchies.
"""

from __future__ import annotations


class SociLabError(Exception):
    """Base of every error soci_lab raises on purpose."""


# --- usage / input --------------------------------------------------------------------------------


class InvalidInput(SociLabError, ValueError):
    """A value given by the user (size, rate, duration, reference, config key) cannot be parsed."""


class ConfigError(InvalidInput):
    """A configuration file or value is invalid."""


# --- oci ------------------------------------------------------------------------------------------


class InvalidReference(InvalidInput):
    """An image reference is malformed."""


class InvalidDigest(InvalidInput):
    """A digest string is malformed or uses an unsupported algorithm."""


class DigestMismatch(SociLabError):
    """Bytes do not hash to the digest they were announced with."""


class SizeMismatch(SociLabError):
    """Bytes are not as long as the descriptor says."""


class InvalidManifest(SociLabError):
    """A manifest, index or config document is malformed, incomplete or of the wrong media type."""


class UnsupportedMediaType(InvalidManifest):
    """A media type soci_lab does not know how to handle in this place."""


class NoMatchingPlatform(SociLabError):
    """An image index has no manifest for the requested platform."""


class ContentNotFound(SociLabError):
    """A blob or manifest is absent from a content store."""


class InvalidLayout(SociLabError):
    """A directory is not a valid OCI image layout."""


# --- remote ---------------------------------------------------------------------------------------


class RegistryError(SociLabError):
    """A registry answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class RegistryUnreachable(RegistryError):
    """The registry could not be reached (connection refused, DNS, timeout) after all retries."""


class AuthenticationError(RegistryError):
    """The registry refused the credentials, or asked for auth in a way that cannot be satisfied."""


class NotFound(RegistryError):
    """The registry answered 404 for a manifest, blob or repository."""


class RangeNotSatisfiable(RegistryError):
    """The registry answered 416 to a ranged GET."""


class TooManyRetries(RegistryError):
    """A request kept failing with retryable errors until the retry budget was spent."""


class TruncatedBody(RegistryError):
    """A response body ended before the announced length."""


class ResponseTooLarge(RegistryError):
    """A response body is larger than the client accepts for that kind of document (memory cap)."""


class NoReferrers(SociLabError):
    """No referrer of the requested artifact type exists (the seed's ErrNoReferrers)."""


# --- ztoc / formats -------------------------------------------------------------------------------


class FormatError(SociLabError):
    """A serialized artifact (zTOC, zinfo, TOC, SOCI index, prefetch artifact) is malformed."""


class InvalidTOCEntry(FormatError):
    """A TOC entry's offsets are inconsistent (the seed's ErrInvalidTOCEntry, "invalid toc entry")."""


class UnsupportedTarEntry(FormatError):
    """A tar entry type that a TOC cannot represent."""


class UnsupportedCompression(FormatError):
    """A layer compression that cannot be indexed (e.g. a single-frame zstd layer)."""


class IncorrectSpanDigest(FormatError):
    """A span's compressed bytes do not match its digest (ErrIncorrectSpanDigest)."""


class IncorrectMaxSpanID(FormatError):
    """The zTOC's max span id disagrees with its checkpoints (ErrIncorrectMaxSpanID)."""


class NonMonotonicCheckpoints(FormatError):
    """Checkpoint offsets do not strictly increase (ErrNonMonotonicCheckpoints)."""


class ExceedMaxSpan(FormatError):
    """A span id beyond the last span was asked for (ErrExceedMaxSpan)."""


class EmptyIndex(SociLabError):
    """No zTOC was created: every layer was skipped (ErrEmptyIndex)."""


class UnknownIndexVersion(FormatError):
    """A SOCI index manifest whose config media type is neither v1 nor v2."""


# --- artifacts (discovery) ------------------------------------------------------------------------


class NoIndex(SociLabError):
    """No SOCI index could be found for the image (snapshot.ErrNoIndex)."""


class NoZtoc(SociLabError):
    """The SOCI index has no zTOC for this layer (snapshot.ErrNoZtoc)."""


class AllLazyPullModesDisabled(SociLabError):
    """Both SOCI v1 and v2 are disabled and no explicit index digest was given."""


class HermesError(SociLabError):
    """The external artifact store failed or answered with an error."""


# --- lazy -----------------------------------------------------------------------------------------


class SpanNotAvailable(SociLabError):
    """A span's content could not be obtained (ErrSpanNotAvailable)."""


class InvalidSpanStateTransition(SociLabError):
    """A span state change outside the allowed transitions (errInvalidSpanStateTransition)."""


class FileVerificationError(SociLabError):
    """A file's tar header does not match its TOC entry."""


class LayerCheckFailed(FileVerificationError):
    """A layer's bytes disagree with its zTOC (layer digest, TOC entries or checkpoints): see
    ``soci_lab/lazy/layercheck.py``."""


class MountError(SociLabError):
    """A FUSE or overlay mount could not be set up or torn down."""


class ServiceError(SociLabError):
    """The per-host soci-lab service (``soci_lab.service``) could not be reached, started or asked."""


class ServiceRefused(ServiceError):
    """What is at the service's socket path was not made by this user's soci-lab service: it is not used."""


# --- unpack (parallel pull) -----------------------------------------------------------------------


class ParallelPullIsDisabled(SociLabError):
    """The given config does not allow parallel pulling."""


class ImageUnpackJobNotFound(SociLabError):
    """No unpack job exists for this image."""


class ImageUnpackJobHasNoLayers(SociLabError):
    """An image unpack job has no layer jobs."""


class ImageUnpackJobExpired(SociLabError):
    """The image unpack job has expired."""


class LayerHasNoJobs(SociLabError):
    """No unpack job exists for this layer."""


class NoClaimableLayerJobs(SociLabError):
    """No claimable jobs for this layer."""


class LayerJobNotFound(SociLabError):
    """The layer unpack job was not found."""


class LayerJobCannotBeCleaned(SociLabError):
    """Layer job cannot be cleaned (is not claimed or cancelled)."""


class LayerIngestDoesNotExist(SociLabError):
    """The layer's ingest file does not exist."""


class LayerUnpackDestinationHasContent(SociLabError):
    """The unpack destination is not empty (protection from layer poisoning)."""


class UnsafeArchiveEntry(SociLabError):
    """A tar entry would write outside its destination, or is not allowed here."""


class VerificationFailed(DigestMismatch):
    """A layer's compressed digest or diffID did not match while it streamed."""


class InvalidJobStatusTransition(SociLabError):
    """A layer unpack job status change outside the allowed transitions."""


class ArchiveError(SociLabError):
    """A layer archive is truncated or malformed (not a security refusal: see UnsafeArchiveEntry)."""


class DecompressionError(ArchiveError):
    """A layer's compressed stream could not be decompressed (corrupt data or a failed external tool)."""


class JobStorageError(SociLabError):
    """An unpack job directory could not be created (no unique id, or the disk refused)."""


class LayerJobCancelled(SociLabError):
    """A layer unpack job was cancelled before its layer was in place."""


class ApplyStopped(SociLabError):
    """A layer apply was stopped from outside (its task was cancelled)."""


# --- store / sim ----------------------------------------------------------------------------------


class StoreError(SociLabError):
    """The Hermes-compatible store refused or failed an operation."""


class BuildQueueFull(StoreError):
    """The store's build queue is full; the build was not accepted."""


class SimulationError(SociLabError):
    """A simulation was configured inconsistently."""


# --- run / analysis -------------------------------------------------------------------------------


class AnalysisError(SociLabError):
    """Run data cannot be summarised, plotted or reported as asked (wrong shape, mixed runs, no data)."""


class RunFormatError(AnalysisError):
    """A directory is not a saved run (missing or malformed events.csv, summary.json or run.json)."""


# --- images (build, copy) -------------------------------------------------------------------------


class ImageBuildError(SociLabError):
    """An image or layer could not be built from its source directories."""


class LayerSourceError(ImageBuildError):
    """A layer's source is missing or is not a directory."""


class UnreadableFile(ImageBuildError):
    """A file or directory in a layer's source cannot be read (permissions)."""


# --- netlab (embedded registry, shaping proxy) ----------------------------------------------------


class NetlabError(SociLabError):
    """The embedded registry or the shaping proxy failed."""


class ServerStartError(NetlabError):
    """A loopback server (embedded registry, shaping proxy) could not start."""


class InvalidFaultSpec(InvalidInput):
    """A ``--faults`` spec string cannot be parsed (unknown key, rate outside [0, 1], rates summing above 1)."""


# --- workload (traces, replay, recording, running in a rootfs) ----------------------------------


class WorkloadError(SociLabError):
    """A workload could not be run, recorded or replayed."""


class TraceFormatError(InvalidInput):
    """An access-trace CSV is malformed; the message names the file and line."""


class ReadinessTimeout(WorkloadError):
    """A workload did not become ready within its timeout."""


# --- datasets (Debian-built image recipes) ----------------------------------------------------------


class DatasetError(SociLabError):
    """A dataset recipe is unknown or its build failed."""


# --- helpers ------------------------------------------------------------------------------------------------


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The first real failure in a task group's exception group (cancellations of its siblings aside), so a
    caller can raise the one clear error instead of a group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, Exception):
            return exc
    return leaves[0] if leaves else group


class NotARegistry(RegistryError):
    """The host answers HTTP, but ``GET /v2/`` says it does not speak the distribution API."""
