defmodule Synod.Coord.Options do
  @moduledoc """
  One option validator: a schema in, a map of the options (defaults filled)
  out, or an `ArgumentError` that names the bad option.

      schema = [
        ttl: [type: {:ms, 30}, default: 10_000],
        timeout: [type: :timeout, default: :infinity],
        call_timeout: [type: :pos_integer, default: 5_000],
        store: [type: :atom, required: true]
      ]

      Synod.Coord.Options.validate!([ttl: 3_000, store: :cfg], schema)
      #=> %{ttl: 3_000, timeout: :infinity, call_timeout: 5_000, store: :cfg}

      Synod.Coord.Options.validate!([ttl: 5], schema)
      ** (ArgumentError) invalid option ttl: expected an integer of ms >= 30, got: 5

  Every message has one shape: `invalid option NAME: expected WHAT, got:
  VALUE`, `unknown option NAME (known: ...)`, `missing option NAME`, and
  `invalid argument NAME: expected WHAT, got: VALUE` for positional
  arguments (`check!/3`). Options are a keyword list (a map is accepted
  too); an option given twice is refused. `validate!/3` names what the
  keys are when they are not options (`"filter"`, `"task field"`).

  Types: `:timeout` (ms >= 0 or `:infinity`), `:pos_integer`,
  `:non_neg_integer`, `:integer`, `{:integer, min, max}`, `{:ms, min}` (an integer of ms from `min` to 2^40, the
  store's lease limit), `:boolean`, `:atom`, `:pid`, `{:binary, max}` (1 to
  `max` bytes), `{:fun, arity}`, `{:in, values}`, `{:list, type}`, `{:or,
  types}`, `{:nil_or, type}`, `:any`, and `{:custom, check, description}`
  where `check` is a 1-argument predicate. Pure: no I/O.
  """

  @max_ms 1_099_511_627_776

  @type type ::
          :timeout
          | :pos_integer
          | :non_neg_integer
          | :integer
          | {:integer, integer(), integer()}
          | {:ms, non_neg_integer()}
          | :boolean
          | :atom
          | :pid
          | {:binary, pos_integer()}
          | {:fun, arity()}
          | {:in, [term()]}
          | {:list, type()}
          | {:or, [type()]}
          | {:nil_or, type()}
          | :any
          | {:custom, (term() -> boolean()), String.t()}
  @type spec :: [type: type(), default: term(), required: boolean()]
  @type schema :: [{atom(), spec()}]

  @doc """
  Validates `opts` against `schema`; returns a map of every given option
  and every default. Raises `ArgumentError` naming the first bad option;
  `what` is the word for the keys in the messages (default `"option"`).
  """
  @spec validate!(term(), schema(), String.t()) :: %{atom() => term()}
  def validate!(opts, schema, what \\ "option")

  def validate!(opts, schema, what) when is_map(opts),
    do: validate!(Map.to_list(opts), schema, what)

  def validate!(opts, schema, what) do
    unless Keyword.keyword?(opts),
      do:
        raise(
          ArgumentError,
          "#{what}s must be a keyword list or a map, got: #{inspect(opts, limit: 5)}"
        )

    opts |> given!(schema, what, %{}) |> defaults!(schema, what)
  end

  # The given options, checked (plain recursion: this runs on every call of
  # the primitives that take options).
  defp given!([], _schema, _what, acc), do: acc

  defp given!([{name, value} | rest], schema, what, acc) do
    spec = spec!(schema, name, what)
    if :erlang.is_map_key(name, acc), do: raise(ArgumentError, "#{what} #{name} given twice")
    check_value!(what, name, value, type_of(spec))
    given!(rest, schema, what, Map.put(acc, name, value))
  end

  defp defaults!(acc, [], _what), do: acc

  defp defaults!(acc, [{name, spec} | rest], what) do
    cond do
      :erlang.is_map_key(name, acc) ->
        defaults!(acc, rest, what)

      default = :lists.keyfind(:default, 1, spec) ->
        defaults!(Map.put(acc, name, elem(default, 1)), rest, what)

      spec[:required] ->
        raise ArgumentError, "missing #{what} #{name}"

      true ->
        defaults!(acc, rest, what)
    end
  end

  defp type_of(spec) do
    case :lists.keyfind(:type, 1, spec) do
      {:type, type} -> type
      false -> nil
    end
  end

  @doc """
  Checks a positional argument: returns `value`, or raises `ArgumentError`
  `invalid argument NAME: expected WHAT, got: VALUE`.
  """
  @spec check!(term(), atom() | String.t(), type()) :: term()
  def check!(value, name, type) do
    check_value!("argument", name, value, type)
    value
  end

  @doc "Whether `value` is of `type`."
  @spec valid?(term(), type()) :: boolean()
  def valid?(value, :timeout), do: value == :infinity or (is_integer(value) and value >= 0)
  def valid?(value, :pos_integer), do: is_integer(value) and value > 0
  def valid?(value, :non_neg_integer), do: is_integer(value) and value >= 0
  def valid?(value, :integer), do: is_integer(value)
  def valid?(value, {:integer, min, max}), do: is_integer(value) and value >= min and value <= max
  def valid?(value, {:ms, min}), do: is_integer(value) and value >= min and value <= @max_ms
  def valid?(value, :boolean), do: is_boolean(value)
  def valid?(value, :atom), do: is_atom(value) and value not in [nil, true, false]
  def valid?(value, :pid), do: is_pid(value)
  def valid?(value, {:binary, max}), do: is_binary(value) and byte_size(value) in 1..max
  def valid?(value, {:fun, arity}), do: is_function(value, arity)
  def valid?(value, {:in, values}), do: value in values
  def valid?(value, {:list, type}), do: is_list(value) and Enum.all?(value, &valid?(&1, type))
  def valid?(value, {:or, types}), do: Enum.any?(types, &valid?(value, &1))
  def valid?(value, {:nil_or, type}), do: value == nil or valid?(value, type)
  def valid?(_value, :any), do: true
  def valid?(value, {:custom, check, _description}), do: check.(value) == true

  @doc "What a value of `type` is, as the error messages say it."
  @spec describe(type()) :: String.t()
  def describe(:timeout), do: "an integer of ms >= 0 or :infinity"
  def describe(:pos_integer), do: "a positive integer"
  def describe(:non_neg_integer), do: "a non-negative integer"
  def describe(:integer), do: "an integer"
  def describe({:integer, min, max}), do: "an integer in #{min}..#{max}"
  def describe({:ms, min}), do: "an integer of ms >= #{min}"
  def describe(:boolean), do: "a boolean"
  def describe(:atom), do: "an atom"
  def describe(:pid), do: "a pid"
  def describe({:binary, max}), do: "a binary of 1..#{max} bytes"
  def describe({:fun, arity}), do: "a function of #{arity} argument(s)"
  def describe({:in, values}), do: "one of #{Enum.map_join(values, ", ", &inspect/1)}"
  def describe({:list, type}), do: "a list of #{describe(type)}"
  def describe({:or, types}), do: Enum.map_join(types, " or ", &describe/1)
  def describe({:nil_or, type}), do: "nil or #{describe(type)}"
  def describe(:any), do: "any term"
  def describe({:custom, _check, description}), do: description

  defp spec!(schema, name, what) do
    case :lists.keyfind(name, 1, schema) do
      {^name, spec} ->
        spec

      false ->
        known = Enum.map_join(Keyword.keys(schema), ", ", &Atom.to_string/1)
        raise ArgumentError, "unknown #{what} #{inspect(name)} (known: #{known})"
    end
  end

  defp check_value!(kind, name, value, type) do
    unless valid?(value, type) do
      raise ArgumentError,
            "invalid #{kind} #{name}: expected #{describe(type)}, got: #{inspect(value, limit: 8)}"
    end
  end
end
