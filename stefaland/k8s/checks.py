"""What ``submit`` checks before it builds a single manifest: names and quantities Kubernetes accepts.

Unchecked, a bad namespace, image reference or ``--cpu 8 cores`` would surface as an API server
rejection (or, for an image, as a pod stuck in ErrImagePull after the GPUs were already reserved).
These are the rules the API server applies, checked locally, each failure one line naming the option.
"""

from __future__ import annotations

import posixpath
import re
from decimal import Decimal, InvalidOperation

from ..errors import StefaLandError
from .manifests import PodOptions

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")  # a label key's name, a label value
SUBDOMAIN_RULE = ("DNS-1123 subdomain: lower-case letters, digits, '-' and '.', starting and ending with a letter or "
                  "digit, at most 253 characters")
LABEL_KEY_RULE = ("label key: [prefix/]name, name at most 63 characters of letters, digits, '-', '_' and '.', "
                  "starting and ending with a letter or digit; prefix a DNS-1123 subdomain")
LABEL_VALUE_RULE = ("label value: empty, or at most 63 characters of letters, digits, '-', '_' and '.', starting and "
                    "ending with a letter or digit")
#: Paths the Job's container mounts itself (manifests._container); a PVC mounted on, inside or
#: above one would hide it (/dev/shm: the data-loader workers' shared memory).
RESERVED_MOUNTS = {"/dev/shm": "the shared-memory volume (--shm)"}
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


def check_subdomain(value: str, option: str, what: str) -> None:
    """Names of Secrets, ServiceAccounts and PersistentVolumeClaims are DNS-1123 subdomains."""
    if len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value):
        raise StefaLandError(f"{option} {value!r}: not a valid {what} name ({SUBDOMAIN_RULE})")


def check_label_key(key: str, option: str) -> None:
    """A node label or taint key, ``[prefix/]name``, as ``kubectl label`` accepts it."""
    prefix, slash, name = key.rpartition("/")
    valid = len(name) <= 63 and _LABEL_NAME.match(name) is not None
    if slash:
        valid = valid and len(prefix) <= 253 and _DNS1123_SUBDOMAIN.match(prefix) is not None
    if not valid:
        raise StefaLandError(f"{option}: {key!r} is not a valid label key ({LABEL_KEY_RULE})")


def check_label_value(key: str, value: str, option: str) -> None:
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        raise StefaLandError(f"{option}: {key}={value!r} is not a valid label value ({LABEL_VALUE_RULE})")


def check_node_selector(selector: dict[str, str], option: str) -> None:
    """Every key and value of a node selector (from ``--node-selector`` or the config's section)."""
    for key, value in selector.items():
        check_label_key(key, option)
        check_label_value(key, value, option)


def check_mount_path(path: str, option: str) -> None:
    """An absolute, normalised container path that neither is, lies inside nor contains one of the
    Job's own mounts: the API server accepts ``/dev/shm`` twice only to fail the pod at start-up."""
    if not path.startswith("/") or "//" in path or posixpath.normpath(path) != path.rstrip("/") or path == "/":
        raise StefaLandError(f"{option} {path!r}: expected an absolute container path such as /data "
                             "(no '..', '.', '//' or the root itself)")
    for reserved, what in RESERVED_MOUNTS.items():
        inside = path == reserved or path.startswith(reserved + "/") or reserved.startswith(path.rstrip("/") + "/")
        if inside:
            raise StefaLandError(f"{option} {path!r}: collides with {reserved}, where the Job mounts {what}; "
                                 "choose another path such as /data")


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
    check_names(pod)


def check_names(pod: PodOptions) -> None:
    """The names the Job refers to (Secret, ServiceAccount, PVC, node labels) and the PVC's mount
    path, so a typo is refused here and not as an API rejection or a pod stuck in ContainerCreating."""
    check_subdomain(pod.secret, "--secret", "Secret")
    if pod.service_account is not None:
        check_subdomain(pod.service_account, "--service-account", "ServiceAccount")
    if pod.pvc is not None:
        check_subdomain(pod.pvc, "--pvc", "PersistentVolumeClaim")
    check_mount_path(pod.pvc_mount, "--pvc-mount")
    check_node_selector(pod.node_selector, "--node-selector")
    for toleration in pod.tolerations:
        if toleration.key:
            check_label_key(toleration.key, "--toleration")
