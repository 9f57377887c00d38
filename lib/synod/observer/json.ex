defmodule Synod.Observer.JSON do
  @moduledoc false
  # A small JSON encoder for the status document (Elixir 1.14 has none and
  # Synod takes no Hex packages). Pure. Maps become objects (keys as
  # strings: atoms by name, anything else inspected), lists and tuples
  # arrays, nil null, true/false, other atoms strings, numbers numbers
  # (non-finite floats cannot occur on the BEAM), binaries strings when they
  # are UTF-8 (else their inspect form), pids, refs and functions their
  # inspect form.

  @spec encode(term()) :: iodata()
  def encode(nil), do: "null"
  def encode(true), do: "true"
  def encode(false), do: "false"
  def encode(v) when is_atom(v), do: string(Atom.to_string(v))
  def encode(v) when is_integer(v), do: Integer.to_string(v)
  def encode(v) when is_float(v), do: :erlang.float_to_binary(v, [:short])
  def encode(v) when is_binary(v), do: string(if String.valid?(v), do: v, else: inspect(v))
  def encode(v) when is_list(v), do: ["[", Enum.map_intersperse(v, ",", &encode/1), "]"]
  def encode(v) when is_tuple(v), do: encode(Tuple.to_list(v))

  def encode(v) when is_map(v) and not is_struct(v) do
    pairs = v |> Enum.map(fn {k, val} -> {key(k), val} end) |> Enum.sort()
    ["{", Enum.map_intersperse(pairs, ",", fn {k, val} -> [string(k), ":", encode(val)] end), "}"]
  end

  def encode(v) when is_struct(v), do: encode(Map.from_struct(v))
  def encode(v), do: string(inspect(v))

  defp key(k) when is_atom(k), do: Atom.to_string(k)
  defp key(k) when is_binary(k), do: if(String.valid?(k), do: k, else: inspect(k))
  defp key(k), do: inspect(k)

  defp string(s), do: [?", escape(s, ""), ?"]

  defp escape(<<>>, acc), do: acc
  defp escape(<<?", rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\\"">>)
  defp escape(<<?\\, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\\\">>)
  defp escape(<<?\n, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\n">>)
  defp escape(<<?\r, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\r">>)
  defp escape(<<?\t, rest::binary>>, acc), do: escape(rest, <<acc::binary, "\\t">>)
  # < > & as escapes: the document is safe to embed in a page.
  defp escape(<<c, rest::binary>>, acc) when c < 0x20 or c in [?<, ?>, ?&],
    do: escape(rest, <<acc::binary, "\\u", hex4(c)::binary>>)

  defp escape(<<c::utf8, rest::binary>>, acc) when c in [0x2028, 0x2029],
    do: escape(rest, <<acc::binary, "\\u", hex4(c)::binary>>)

  defp escape(<<c::utf8, rest::binary>>, acc), do: escape(rest, <<acc::binary, c::utf8>>)

  defp hex4(c), do: c |> Integer.to_string(16) |> String.pad_leading(4, "0")
end
