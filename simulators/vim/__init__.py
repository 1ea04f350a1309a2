"""
A simulated VIM (think a small OpenStack Heat) for tests, benchmarks and
demos: infrastructure made from templates, create and delete requests that
take time on an injected clock and can end with each of Ignition's failure
codes, a capacity limit, and fault injection.  The cluster's ``simulated``
infrastructure driver (`clusterd.infrastructure.simulated`) talks to it.

In-process::

    port, sim = await start_vim_simulator(reactor, create_duration=2.0, clock=task_clock)
    url = simulator_url(port)                      # the driver's {"url": ...}
    ...
    await stop_vim_simulator(port, sim)

As a daemon: ``twistd -n vim-sim --listen tcp:8090:interface=127.0.0.1
--create-duration 3 --delete-duration 1 [--capacity N] [--fault
error_rate=0.1]``.  State lives in memory as long as the process.

The API (JSON bodies and answers; errors are ``{"code", "message"}``):

========================================================  ======  =============================================
request                                                   status  answer
========================================================  ======  =============================================
``GET /v1``                                               200     ``{name, versions, template_types}``
``POST /v1/infrastructures``                              202     ``{id, request_id}`` (the create request)
  ``{name, template, template_type?, properties?}``
``GET /v1/infrastructures[?name=N]``                      200     ``{infrastructures: [infrastructure, ...]}``
                                                                  (live ones, oldest first)
``GET /v1/infrastructures/{id}``                          200     infrastructure
``DELETE /v1/infrastructures/{id}``                       202     ``{id, request_id}`` (the delete request)
``GET /v1/infrastructures/{id}/requests``                 200     ``{requests: [request, ...]}``
``GET /v1/infrastructures/{id}/requests/{request_id}``    200     request
``POST /v1/templates/validate``                           200     ``{valid: true, parameters, resources,
  ``{template, template_type?}``                                  outputs}`` (their names)
``GET|POST /_sim/faults`` (test-only control)             200     the injected `Faults`
========================================================  ======  =============================================

- infrastructure: ``{id, name, status, template_type, created_at,
  resources: [{name, type, id, ip}], requests: [request_id, ...],
  outputs?}``; status is Heat's CREATE_IN_PROGRESS, CREATE_COMPLETE,
  CREATE_FAILED, DELETE_IN_PROGRESS, DELETE_COMPLETE or DELETE_FAILED;
  ``outputs`` once the create completed.
- request: ``{id, request_id, operation: create|delete, status:
  IN_PROGRESS|COMPLETE|FAILED, failure_code?, description?, outputs?}``;
  a failed request has a failure code (RESOURCE_ALREADY_EXISTS,
  RESOURCE_NOT_FOUND, INFRASTRUCTURE_ERROR, INSUFFICIENT_CAPACITY,
  INTERNAL_ERROR) and a description; a completed create has the outputs.
- ``template_type`` defaults to ``simulated``, the only type (any case); the
  template format is in `simulators.vim.template`.  ``properties`` give the
  template's parameters (plain JSON values).
- Errors: 400 ``BadRequest`` (the body is not a JSON object, or the name is
  not 1–255 characters), 400 ``InvalidTemplate`` (bad YAML or shape, an
  unknown template type, a parameter without a value), 404
  ``InfrastructureNotFound`` (no such id, or deleting deleted
  infrastructure), 404 ``RequestNotFound`` (the infrastructure has no such
  request), 404 ``NotFound`` (no such path), 405 ``MethodNotAllowed``, 413
  ``BadRequest`` (body over 4 MiB), and injected faults (503
  ``ServiceUnavailable`` by default).
- A create with the name of live infrastructure is accepted and its request
  FAILED at once (RESOURCE_ALREADY_EXISTS); so is one beyond ``capacity``
  (INSUFFICIENT_CAPACITY).  The rest of the behaviour (durations, deleting
  while creating, what stays visible) is in `simulators.vim.state`.
"""

from simulators.vim.errors import ApiError
from simulators.vim.faults import Faults
from simulators.vim.state import Infrastructure, Request, VimSimulator
from simulators.vim.template import FAILURE_CODES, TEMPLATE_TYPE, Template, TemplateError, parse_template
from simulators.vim.web import VimResource, make_site, simulator_url, start_vim_simulator, stop_vim_simulator

__all__ = [
    "VimSimulator",
    "Infrastructure",
    "Request",
    "Faults",
    "ApiError",
    "Template",
    "TemplateError",
    "parse_template",
    "TEMPLATE_TYPE",
    "FAILURE_CODES",
    "VimResource",
    "make_site",
    "simulator_url",
    "start_vim_simulator",
    "stop_vim_simulator",
]
