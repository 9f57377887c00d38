defmodule Synod.Hub.Protocol do
  @moduledoc false
  # Pure: whether a term is a well-formed message or call of docs/protocol.md.
  # The coordinator checks every message and call with these before acting
  # on it, so a malformed version of a protocol message is stray input
  # (docs/hub.md, "Stray input"), never a crash halfway through handling it.
  # The checks are shapes and types only; whether a sender is a member, or
  # a reference names a request, is for the coordinator to decide.

  alias Synod.Hub.{Registry, Spec}

  @doc "Whether `message` is one the coordinator accepts (handle_info)."
  @spec message?(term()) :: boolean()
  def message?({:synod_start, _ref, reply_to, entries, opts}),
    do: pids?(reply_to) and start_entries?(entries) and proper?(opts)

  def message?({:synod_stop, _ref, reply_to, ids, opts}),
    do: pids?(reply_to) and proper?(ids) and proper?(opts)

  def message?({:synod_registered, from, entries, replies}),
    do: is_atom(from) and all?(entries, &registered_entry?/1) and replies?(replies)

  def message?({:synod_unregistered, from, stopped, why, replies}),
    do: is_atom(from) and why?(why) and id_pids?(stopped) and replies?(replies)

  def message?({:synod_stopped, from, t, ids, replies}),
    do: is_atom(from) and is_integer(t) and proper?(ids) and replies?(replies)

  def message?({:synod_orphans, from, orphans}),
    do: is_atom(from) and all?(orphans, &orphan?/1)

  def message?({:synod_sync, from, entries, orphans, tombstones}),
    do:
      is_atom(from) and all?(entries, &registered_entry?/1) and all?(orphans, &orphan?/1) and
        tombstones?(tombstones)

  def message?({:synod_tombstones, from, tombstones}),
    do: is_atom(from) and tombstones?(tombstones)

  # A coordinator runs on the node it speaks for.
  def message?({tag, node, pid, _config}) when tag in [:synod_hello, :synod_welcome],
    do: is_pid(pid) and node(pid) == node

  def message?({tag, node}) when tag in [:synod_bye, :nodeup, :nodedown], do: is_atom(node)
  def message?({:DOWN, ref, :process, _, _}), do: is_reference(ref)
  def message?({:synod_results, _ref, target, results}), do: is_atom(target) and proper?(results)

  def message?({:synod_handover_done, ref, target, moved}),
    do: is_reference(ref) and is_atom(target) and proper?(moved)

  def message?({:synod_migration_timeout, ref}), do: is_reference(ref)
  def message?({:synod_peer_timeout, ref}), do: is_reference(ref)
  def message?({:synod_sweep, ref}), do: is_reference(ref)
  def message?({:"ETS-TRANSFER", _tab, _from, :synod_adopted}), do: true
  def message?({:synod_event, id, _data, discard}), do: is_atom(id) and is_boolean(discard)

  def message?({:synod_child_exit, token, _id, pid, _reason, new}),
    do: is_reference(token) and is_pid(pid) and (is_pid(new) or new == nil)

  def message?(_), do: false

  @doc "Whether `request` is a call the coordinator answers (handle_call)."
  @spec call?(term()) :: boolean()
  def call?(request) when request in [:synod_barrier, :members, :config, :ring_info], do: true
  def call?({:whereis, _id}), do: true
  def call?({:synod_locate, ids}), do: proper?(ids)

  def call?({:synod_dispatch_event, id, _data, discard}),
    do: is_atom(id) and is_boolean(discard)

  def call?({:synod_subscribe, pid, ids}), do: is_pid(pid) and (ids == :all or atoms?(ids))
  def call?({:synod_unsubscribe, pid}), do: is_pid(pid)
  def call?({:start_children, entries}), do: start_entries?(entries)
  def call?({:stop_children, ids}), do: proper?(ids)
  def call?(_), do: false

  # ── shapes ───────────────────────────────────────────────────────────────

  defp start_entries?(entries), do: all?(entries, &start_entry?/1)

  defp start_entry?({_id, spec, slot, mode}),
    do: mode in [:active, :passive] and Registry.slot?(slot) and Spec.stored?(spec)

  defp start_entry?(_), do: false

  defp registered_entry?({_id, spec, slot, pid}),
    do: is_pid(pid) and Registry.slot?(slot) and Spec.stored?(spec)

  defp registered_entry?(_), do: false

  defp orphan?({_id, spec, slot}), do: Registry.slot?(slot) and Spec.stored?(spec)
  defp orphan?(_), do: false

  # (A stop request's change is `synod_stopped`: no member sends
  # `synod_unregistered` with `{stopped, T}` since issue 17's stop work, and
  # none takes it.)
  defp why?(why), do: why in [:stopped, :migrating, :suspended]

  defp tombstones?(tombstones), do: all?(tombstones, &match?({_id, t} when is_integer(t), &1))

  # `[{id, pid}]`, the shape of a stop announcement (tens of thousands of
  # entries): one clause per entry, no function called on each.
  defp id_pids?([{_id, pid} | rest]) when is_pid(pid), do: id_pids?(rest)
  defp id_pids?([]), do: true
  defp id_pids?(_), do: false

  defp replies?(replies), do: all?(replies, &reply?/1)

  defp reply?({_ref, pids, {tag, answered}}) when tag in [:stopped, :started],
    do: pids?(pids) and pids?(answered)

  defp reply?({_ref, pids, results}), do: pids?(pids) and proper?(results)
  defp reply?(_), do: false

  defp pids?(list), do: all?(list, &is_pid/1)
  defp atoms?(list), do: all?(list, &is_atom/1)
  defp proper?([_ | rest]), do: proper?(rest)
  defp proper?([]), do: true
  defp proper?(_), do: false

  # Enum.all?/2 for proper lists only: false for anything else (an improper
  # list included), never an exception.
  defp all?([x | rest], fun), do: fun.(x) and all?(rest, fun)
  defp all?([], _fun), do: true
  defp all?(_, _fun), do: false
end
