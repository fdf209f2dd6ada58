"""What ``submit`` checks before it builds a single manifest: names and quantities Kubernetes accepts.

A bad namespace, image reference or ``--cpu 8 cores`` used to surface as an API server rejection
(or, for an image, as a pod stuck in ErrImagePull after the GPUs were already reserved). These
are the rules the API server applies, checked locally, each failure one line naming the option.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from ..errors import StefaLandError
from .manifests import PodOptions

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# the grammar of github.com/distribution/reference: [registry[:port]/]path[:tag][@digest]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_IMAGE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{{32,}})?$"
)
_QUANTITY = re.compile(r"^(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][-+]?[0-9]+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
            "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}
PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def check_namespace(namespace: str) -> None:
    """A namespace is a DNS-1123 label: lower-case alphanumerics and '-', at most 63 characters."""
    if len(namespace) > 63 or not _DNS1123_LABEL.match(namespace):
        raise StefaLandError(
            f"--namespace {namespace!r}: not a valid namespace (DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )


def check_image(image: str) -> None:
    """An image reference as the container runtime parses it: ``[registry/]name[:tag][@sha256:…]``."""
    if len(image) > 4096 or not _IMAGE.match(image) or len(image.split("@")[0].rsplit("/", 1)[-1]) == 0:
        raise StefaLandError(
            f"--image {image!r}: not a valid image reference (expected [registry[:port]/]name[:tag][@sha256:digest], "
            "lower-case name)"
        )


def quantity(value: str, option: str) -> Decimal:
    """A Kubernetes resource quantity ('500m', '2', '16Gi', '1e9') as a number of base units."""
    match = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if not match:
        raise StefaLandError(f"{option} {value!r}: not a Kubernetes quantity (e.g. 500m, 4, 16Gi, 512Mi)")
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation:
        raise StefaLandError(f"{option} {value!r}: not a Kubernetes quantity") from None
    suffix = match.group("suffix") or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _DECIMAL[suffix]


def check_pod(pod: PodOptions, namespace: str) -> None:
    """Every user-supplied name and quantity of a submission, before any manifest is built."""
    check_namespace(namespace)
    check_image(pod.image)
    if pod.image_pull_policy not in PULL_POLICIES:
        raise StefaLandError(f"image pull policy {pod.image_pull_policy!r}: expected one of {', '.join(PULL_POLICIES)}")
    cpu = quantity(pod.cpu_quantity(), "--cpu")
    if cpu < Decimal("0.001"):
        raise StefaLandError(f"--cpu {pod.cpu_quantity()!r}: a pod needs at least 1m of CPU")
    memory = quantity(pod.memory_quantity(), "--memory")
    if memory < 2**20:
        raise StefaLandError(f"--memory {pod.memory_quantity()!r}: below 1Mi (a plain number is bytes; write 16Gi for 16 GiB)")
    if quantity(pod.shm, "shared memory size") <= 0:
        raise StefaLandError(f"shared memory size {pod.shm!r} must be positive")
