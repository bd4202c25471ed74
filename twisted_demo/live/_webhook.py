"""
A validating admission webhook for ConfigMaps: the API server sends each
C{CREATE} and C{UPDATE} of a ConfigMap as an C{admission.k8s.io/v1}
C{AdmissionReview}, and the app's own parse function, run on the ConfigMap's
key, decides whether it is stored.

It knows nothing of any one app, as the C{check} command does not: the app
passes its parse function and the key its config is mounted from.  A
ConfigMap without the key is allowed: other apps' ConfigMaps may match the
webhook's selector.  A denial names the key, the line and column in the
config and the kind of problem, as the parse function's L{ConfigError} says
them; the API server shows it to whoever applied the ConfigMap.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from attrs import frozen
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from twisted_demo.live._check import (
    CheckFailed,
    CheckPassed,
    CheckResult,
    CheckSkipped,
    CheckSource,
    ParseFunction,
)
from twisted_demo.live._errors import ConfigError, ParseCrashed
from twisted_demo.live._reader import DEFAULT_MAX_BYTES, over_limit
from twisted_demo.live._runner import Runner, default_runner, inline

__all__ = [
    "DEFAULT_DEADLINE",
    "AdmissionWebhook",
    "Answer",
    "Answered",
    "check_configmap",
    "review_limit",
]

#: Seconds a review may take, from its arrival to its answer; past them it
#: is answered 503 and the API server applies the webhook's failurePolicy.
#: The costliest 1 MiB config takes 0.8 s of CPU to parse: the rest is for a
#: pod that gets less than a core.  Well inside the API server's default
#: timeoutSeconds of 10 s, which leaves it time to hear the 503.
DEFAULT_DEADLINE = 6.0

#: What a review's source is named in results: it is no file.
REVIEW = "<AdmissionReview>"

#: Room for the metadata of each object in a review (labels, annotations,
#: managed fields) beside its data.
METADATA_BYTES = 512 * 1024

#: Bytes of JSON the API server may write for one byte of a value: Go
#: writes C{<}, C{>} and C{&} as C{\\u003c}.
JSON_EXPANSION = 6

_API_VERSION = "admission.k8s.io/v1"
_KIND = "AdmissionReview"
_CONFIGMAP = {"group": "", "version": "v1", "kind": "ConfigMap"}
_CHECKED = ("CREATE", "UPDATE")
#: The operations an admission review is sent for (admission.k8s.io/v1).
_OPERATIONS = (*_CHECKED, "DELETE", "CONNECT")
_JSON = b"application/json"
_TEXT = b"text/plain; charset=utf-8"

_log = Logger(namespace="twisted_demo.live.webhook")


def review_limit(max_bytes: int) -> int:
    """
    The largest C{AdmissionReview} body to accept for configs of at most
    C{max_bytes}: an C{UPDATE} carries the ConfigMap twice (C{object} and
    C{oldObject}), each with at most C{max_bytes} of data, which JSON may
    write in up to L{JSON_EXPANSION} bytes a byte, and its metadata.
    """
    return 2 * (JSON_EXPANSION * max_bytes + METADATA_BYTES)


def _qualified(configmap: Mapping[str, Any]) -> str:
    metadata = configmap.get("metadata")
    if not isinstance(metadata, Mapping):
        return "(unnamed)"
    name = metadata.get("name") or metadata.get("generateName") or "(unnamed)"
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else str(name)


def _value(configmap: Mapping[str, Any], source: CheckSource) -> bytes | CheckResult:
    """
    The bytes of C{source.key} in C{configmap}, as the kubelet would write
    the file; or the result that there is none to check.
    """
    key = source.key
    found = []
    for section in ("data", "binaryData"):
        values = configmap.get(section)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            return CheckFailed(source, ConfigError(f"{section} is not a mapping"))
        if key in values:
            found.append((section, values[key]))
    if not found:
        return CheckSkipped(source, "no such key in data or binaryData")
    if len(found) > 1:
        return CheckFailed(
            source, ConfigError("the key is in both data and binaryData")
        )
    [(section, value)] = found
    if not isinstance(value, str):
        return CheckFailed(
            source, ConfigError(f"the value in {section} is not a string")
        )
    if section == "data":
        return value.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        return CheckFailed(source, ConfigError("the value in binaryData is not base64"))


def check_configmap(
    parse: ParseFunction,
    configmap: Mapping[str, Any],
    *,
    key: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    runner: Runner[Any] = inline,
) -> Deferred[CheckResult]:
    """
    Check C{key} of C{configmap}, a ConfigMap object as the API server
    sends it (C{data} as text, C{binaryData} as base64), with C{parse} run
    by C{runner} on at most C{max_bytes}, as the service would read it.

    @return: Fires with L{CheckPassed}, L{CheckSkipped} (no such key), or L{CheckFailed}
        naming the line and column the L{ConfigError} gives; fails when
        C{runner} could not run C{parse} (anything but L{ConfigError} and
        L{ParseCrashed}).
    """
    source = CheckSource(REVIEW, _qualified(configmap), key)
    raw = _value(configmap, source)
    if not isinstance(raw, bytes):
        return succeed(raw)
    if len(raw) > max_bytes:
        return succeed(CheckFailed(source, over_limit(max_bytes)))

    def refused(failure: Failure) -> CheckResult:
        if isinstance(failure.value, ConfigError):
            return CheckFailed(source, failure.value)
        # Its text may quote the input: say only that it crashed.
        failure.trap(ParseCrashed)
        return CheckFailed(source, ConfigError("the parser crashed on it"))

    d: Deferred[Any] = runner(parse, raw)
    return d.addCallbacks(lambda _: CheckPassed(source), refused)


def denial(result: CheckFailed) -> str:
    """
    The message of a denial, for the person who applied the ConfigMap:
    the key, then the reason with its line and column in the config.
    """
    return f"{result.source.key}: {result.error}"


@frozen
class Answer:
    """
    The HTTP answer to one review.

    @ivar verdict: C{allowed} (checked), C{skipped} (allowed unchecked: no
        such key, another kind, a C{DELETE}), C{denied}, C{malformed} (400:
        not a review) or C{failed} (503: the parser gave no answer).
    """

    status: int
    content_type: bytes
    body: bytes
    verdict: str


@frozen
class Answered:
    """
    What observers of a webhook hear of each review: its verdict and how
    long it took to answer, in seconds.
    """

    verdict: str
    seconds: float


class _Malformed(Exception):
    """
    The body is not an C{AdmissionReview} to answer.
    """


def _review(body: bytes) -> dict[str, Any]:
    """
    The C{request} of the C{AdmissionReview} in C{body}.

    @raise _Malformed: Saying what is wrong with it, never quoting it.
    """
    try:
        review = json.loads(body)
    except json.JSONDecodeError as e:
        raise _Malformed(
            f"the body is not JSON (line {e.lineno}, column {e.colno}: {e.msg})"
        ) from None
    except UnicodeDecodeError as e:
        raise _Malformed(f"the body is not UTF-8 (at byte {e.start})") from None
    except RecursionError:
        raise _Malformed("the body is JSON nested too deeply") from None
    if not isinstance(review, dict):
        raise _Malformed("the body is not a JSON object")
    if (review.get("apiVersion"), review.get("kind")) != (_API_VERSION, _KIND):
        raise _Malformed(f"the body is not an {_API_VERSION} {_KIND}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise _Malformed("the review has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise _Malformed("the review's request has no uid")
    return request


def _response(uid: str, result: CheckFailed | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": result is None}
    if result is not None:
        # 422 with reason Invalid, as the API server refuses an invalid
        # object itself.
        response["status"] = {
            "code": 422,
            "reason": "Invalid",
            "message": denial(result),
        }
    return {"apiVersion": _API_VERSION, "kind": _KIND, "response": response}


def _json(document: dict[str, Any], verdict: str) -> Answer:
    body = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return Answer(200, _JSON, body, verdict)


def _text(status: int, text: str, verdict: str) -> Answer:
    return Answer(status, _TEXT, text.encode("utf-8") + b"\n", verdict)


def _malformed(why: str) -> Answer:
    _log.warn("Refused a request that is not a review: {why}", why=why)
    return _text(400, why, "malformed")


class AdmissionWebhook(MultiService):
    """
    Answers C{AdmissionReview}s of ConfigMaps with C{parse} run on C{key}:
    serve L{resource} at the path the C{ValidatingWebhookConfiguration}
    names, over HTTPS, with request bodies limited to L{request_limit}.

    An C{IService}: unless C{runner} is given, C{parse} runs in a parser
    process of its own, started and stopped with it, so that a slow or
    hostile config costs the reactor nothing.

    @param reactor: Times the deadline and runs the parser process; the
        global reactor, imported when the webhook is built, if not given.
    @param deadline: Seconds a review may take before it is answered 503.
    @param preload: Modules its parser process imports as it starts,
        besides C{parse}'s own (see L{LiveConfigService}).
    """

    def __init__(
        self,
        parse: ParseFunction,
        *,
        key: str,
        reactor: Any = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        runner: Runner[Any] | None = None,
        deadline: float = DEFAULT_DEADLINE,
        preload: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self._clock: IReactorTime = reactor
        self._parse = parse
        self.key = key
        self.max_bytes = max_bytes
        self.deadline = deadline
        if runner is None:
            from twisted_demo.live._process import import_path

            import_path(parse)
            # At the server's own priority: unlike a live service's reload,
            # the parse is the answer the API server is waiting for.
            runner = default_runner(
                reactor, parse, deadline=deadline, niceness=0, preload=preload
            )
        self._runner = runner
        if IService.providedBy(runner):
            IService(runner).setServiceParent(self)
        self._observers: list[Callable[[Answered], None]] = []

    @property
    def request_limit(self) -> int:
        """
        The largest request body worth reading (see L{review_limit}).
        """
        return review_limit(self.max_bytes)

    def observe(self, observer: Callable[[Answered], None]) -> Callable[[], None]:
        """
        Call C{observer} with the L{Answered} of every review; returns a
        function that stops the calls.
        """
        self._observers.append(observer)
        return lambda: self._observers.remove(observer)

    def answer(self, body: bytes) -> Deferred[Answer]:
        """
        The answer to the review in C{body}, within the deadline.  Never
        fails.
        """
        started = self._clock.seconds()

        def answered(answer: Answer) -> Answer:
            seen = Answered(answer.verdict, self._clock.seconds() - started)
            for observer in list(self._observers):
                observer(seen)
            return answer

        try:
            request = _review(body)
        except _Malformed as e:
            return succeed(answered(_malformed(str(e))))
        return self._judge(request).addCallback(answered)

    def _judge(self, request: dict[str, Any]) -> Deferred[Answer]:
        uid = request["uid"]
        operation = request.get("operation")
        if operation not in _OPERATIONS:
            # Or a review missing it would be let through unchecked.
            return succeed(_malformed("the review's request has no operation"))
        if operation not in _CHECKED:
            return succeed(_json(_response(uid), "skipped"))
        kind = request.get("kind")
        # The API server names the kind of every object it sends: its
        # group, version and kind.
        if not (
            isinstance(kind, dict)
            and isinstance(kind.get("kind"), str)
            and isinstance(kind.get("version"), str)
            and kind["kind"]
        ):
            return succeed(_malformed(f"the {operation} review names no kind"))
        if kind != _CONFIGMAP:
            # The webhook's rules sent something other than a ConfigMap.
            _log.warn(
                "Allowed a {operation} of {kind} unchecked: only ConfigMaps "
                "are checked",
                operation=operation,
                kind=_kind(kind),
            )
            return succeed(_json(_response(uid), "skipped"))
        configmap = request.get("object")
        if not isinstance(configmap, dict):
            return succeed(_malformed(f"the {operation} review has no object"))
        checking = check_configmap(
            self._parse,
            configmap,
            key=self.key,
            max_bytes=self.max_bytes,
            runner=self._runner,
        )
        checking.addTimeout(self.deadline, self._clock)
        return checking.addCallbacks(
            lambda result: self._verdict(uid, result), self._unchecked
        )

    def _verdict(self, uid: str, result: CheckResult) -> Answer:
        match result:
            case CheckPassed():
                return _json(_response(uid), "allowed")
            case CheckSkipped():
                return _json(_response(uid), "skipped")
            case CheckFailed(source):
                _log.info(
                    "Denied ConfigMap {configmap}: {denial}",
                    configmap=source.configmap,
                    denial=denial(result),
                )
                return _json(_response(uid, result), "denied")
        raise AssertionError(result)

    def _unchecked(self, failure: Failure) -> Answer:
        if failure.check(TimeoutError):
            why = f"no answer from the parser in {self.deadline:g}s"
        else:
            why = failure.getErrorMessage()
        _log.warn("Could not check a ConfigMap: {why}", why=why)
        return _text(503, f"could not check the ConfigMap: {why}", "failed")

    def resource(self) -> IResource:
        """
        The resource answering C{POST} with the review's answer.
        """
        return _ReviewResource(self)


def _kind(kind: Mapping[str, object]) -> str:
    group = kind.get("group")
    return f"a {kind.get('kind')} ({group or 'core'}/{kind.get('version')})"


class _ReviewResource(Resource):
    """
    C{POST}: the answer to the review in the body.  The body must be
    bounded before it is read (C{twisted.web} reads all of it); one over
    the webhook's limit that got here anyway is answered 413.
    """

    isLeaf = True

    def __init__(self, webhook: AdmissionWebhook) -> None:
        super().__init__()
        self._webhook = webhook

    def render_POST(self, request: Request) -> int | bytes:
        limit = self._webhook.request_limit
        assert request.content is not None
        body = request.content.read(limit + 1)
        if len(body) > limit:
            answer = _text(413, "request body too large", "malformed")
            return self._write(request, answer)
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def send(answer: Answer) -> None:
            if not gone:
                request.write(self._write(request, answer))
                request.finish()

        self._webhook.answer(body).addCallback(send)
        return NOT_DONE_YET

    @staticmethod
    def _write(request: IRequest, answer: Answer) -> bytes:
        request.setResponseCode(answer.status)
        request.setHeader(b"content-type", answer.content_type)
        request.setHeader(b"content-length", b"%d" % (len(answer.body),))
        request.setHeader(b"x-content-type-options", b"nosniff")
        return answer.body
