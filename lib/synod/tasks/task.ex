defmodule Synod.Tasks.Task do
  @moduledoc """
  One task of `Synod.Tasks`, as the store holds it.

    * `id`, `group_id` (defaults to the id), `topic`, `sub_topic` (default
      `"default"`), `data` (any term);
    * `status`: `:starting`, `:running`, `:snoozed`, `:failed` or
      `:terminated` — as of the read: a running task whose lease expired,
      or a snoozed task whose snooze ended, reads as `:starting` (the
      leader expired its lease through the log);
    * `owner`: the pid holding the lease of a running task, else nil;
    * `record_ver`: the record's mod_revision in the store — it grows on
      every write of the record and is the fencing token of
      `Synod.Tasks.revoke_lease/3`;
    * `lease_id`, `lease_ms`: the store lease of the running task (or of
      the snooze of a snoozed one), and the task lease's TTL;
    * `lease_deadline`, `snooze_until`: wall-clock milliseconds
      (`System.system_time/1` of the node that wrote them) when the lease
      or snooze ends *at the earliest*. Advisory only: the lease itself
      decides, on the store leader's monotonic clock;
    * `snooze_ms`: the last snooze's length; `error`: the term given to
      `Synod.Tasks.fail/4`;
    * `created_at`, `updated_at`: wall-clock milliseconds of the writing
      node (informational; `list_tasks/3` filters on `created_at`);
    * `seq`: the task's place in its topic (reservation order).
  """

  @type status :: :starting | :running | :snoozed | :failed | :terminated

  @type t :: %__MODULE__{
          id: binary(),
          group_id: binary(),
          topic: binary(),
          sub_topic: binary(),
          data: term(),
          status: status(),
          owner: pid() | nil,
          record_ver: non_neg_integer(),
          lease_id: non_neg_integer(),
          lease_ms: pos_integer() | nil,
          lease_deadline: integer() | nil,
          error: term(),
          snooze_ms: pos_integer() | nil,
          snooze_until: integer() | nil,
          created_at: integer(),
          updated_at: integer(),
          seq: pos_integer()
        }

  defstruct [
    :id,
    :group_id,
    :topic,
    :data,
    :error,
    :lease_ms,
    :lease_deadline,
    :snooze_ms,
    :snooze_until,
    :created_at,
    :updated_at,
    :seq,
    sub_topic: "default",
    status: :starting,
    owner: nil,
    record_ver: 0,
    lease_id: 0
  ]
end
