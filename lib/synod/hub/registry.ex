defmodule Synod.Hub.Registry do
  @moduledoc false
  # Pure: the registry row's format, the one place that knows it. A row, on
  # every member:
  #
  #   {child_id, spec, slot, [pid]}   — one pid per member running a copy
  #
  # `slot` holds the user's metadata and the child's incarnation together,
  # as `nil | map` (incarnation 0), `inc` (no metadata) or `{inc, map}`: in
  # the registry's compressed rows that costs no more than the metadata
  # alone, where a fifth element would cost a word per row. The same slot
  # travels as the `Meta` of start entries and registry changes between
  # members (docs/protocol.md), so a child keeps its incarnation through
  # restarts, moves and redistribution.
  #
  # The incarnation is the hybrid-clock stamp (µs) of the request that
  # started the child; a stop records a tombstone with a later stamp, and
  # a copy, row or announcement whose incarnation is not above a tombstone
  # of its id is a stopped child (docs/hub.md, "Stops").

  @type slot :: nil | map() | non_neg_integer() | {non_neg_integer(), map()}

  @doc "The slot for `meta` (nil or a map) and incarnation `inc`."
  @spec slot(nil | map(), non_neg_integer()) :: slot()
  def slot(meta, 0), do: meta
  def slot(nil, inc), do: inc
  def slot(meta, inc), do: {inc, meta}

  @doc "The user's metadata in a slot."
  @spec meta(slot()) :: nil | map()
  def meta({_inc, meta}), do: meta
  def meta(inc) when is_integer(inc), do: nil
  def meta(meta), do: meta

  @doc "The incarnation in a slot (0: none known)."
  @spec inc(slot()) :: non_neg_integer()
  def inc({inc, _meta}), do: inc
  def inc(inc) when is_integer(inc), do: inc
  def inc(_meta), do: 0

  @doc "The slot with incarnation `inc` and the same metadata."
  @spec with_inc(slot(), non_neg_integer()) :: slot()
  def with_inc(slot, inc), do: slot(meta(slot), inc)

  @doc "Whether a term is a slot (what a member checks in a message)."
  @spec slot?(term()) :: boolean()
  def slot?({inc, meta}), do: is_integer(inc) and inc >= 0 and is_map(meta)
  def slot?(inc) when is_integer(inc), do: inc >= 0
  def slot?(meta), do: meta == nil or is_map(meta)

  @doc "Match specs selecting `{child_id, [pid]}` of the rows tagged `tag`."
  @spec tagged(term()) :: :ets.match_spec()
  def tagged(tag) do
    for slot <- [%{tag: tag}, {:_, %{tag: tag}}],
        do: {{:"$1", :_, slot, :"$2"}, [], [{{:"$1", :"$2"}}]}
  end
end
