defmodule Synod.StartResult do
  @moduledoc """
  The outcome of `Synod.start_children/3` (and `Synod.start_child/3`).

    * `:started` — `{child_id, node, pid}` for every replica that started (or
      was already running on its owner);
    * `:errors` — `{child_id, node, reason}` for every replica that did not:
      the child's own start error, `:timeout` when the node did not answer
      in time, `{:nodedown, node}` when the node (or its hub) went away
      before answering, `:partitioned` when the node was in a minority;
    * `:rolled_back` — `true` when `on_failure: :rollback` stopped every
      child of the request because of an error.

  A `{:nodedown, node}` error means the outcome is unknown: the node may have
  started the child just before it went down, in which case the child's new
  owner restarts it. Use `Synod.whereis/2` to find out, or `:rollback`.
  """

  defstruct started: [], errors: [], rolled_back: false

  @type t :: %__MODULE__{
          started: [{term(), node(), pid()}],
          errors: [{term(), node(), term()}],
          rolled_back: boolean()
        }

  @doc "The pids that started, by child id: `%{child_id => [pid]}`."
  @spec pids(t()) :: %{term() => [pid()]}
  def pids(%__MODULE__{started: started}) do
    Enum.reduce(Enum.reverse(started), %{}, fn {id, _node, pid}, acc ->
      Map.update(acc, id, [pid], &[pid | &1])
    end)
  end
end
