defmodule Synod.Handover do
  @moduledoc """
  State handover for hubs started with `migration: :hot`.

  When a child moves to another node (a member joined, so its owner changed),
  a hot-swapping hub starts the new copy first, then copies the old
  process's state into it, then stops the old one. The copy uses
  `:sys.get_state/2` on the old process and `:sys.replace_state/3` on the
  new one, so the child must be an OTP process (`GenServer`, `:gen_statem`,
  ...).

  By default the new process simply takes the old state. A child module
  that wants a say implements this behaviour's `c:handover/2`:

      defmodule Counter do
        use GenServer
        @behaviour Synod.Handover

        @impl Synod.Handover
        def handover(old_state, new_state), do: %{new_state | count: old_state.count}
        ...
      end

  A handover that fails (the old process is busy past the hub's
  `:handover_timeout`, or the callback raises) is logged and the migration
  completes with the new process's own initial state.
  """

  @doc "Merges the state of the process being replaced into its successor's."
  @callback handover(old_state :: term(), new_state :: term()) :: term()

  @doc false
  @spec merge(term(), term()) :: term()
  def merge(old_state, new_state) do
    # Runs inside the new process (through :sys.replace_state/3).
    case Process.get(:"$initial_call") do
      {module, _, _} when is_atom(module) ->
        if function_exported?(module, :handover, 2),
          do: module.handover(old_state, new_state),
          else: old_state

      _ ->
        old_state
    end
  end
end
