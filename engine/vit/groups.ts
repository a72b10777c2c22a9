// The ViT's parameter groups, as timm's `group_matcher` and `no_weight_decay`: which layer a tensor
// belongs to and whether AdamW decays it. Strategies, angles and the optimizer ask here; nothing
// else reads structure out of parameter names.
//   attention layer of block i = blocks.i.norm1.* + blocks.i.attn.*
//   FFN layer of block i       = blocks.i.norm2.* + blocks.i.mlp.*

export type ParamGroup =
  | { readonly kind: 'attn' | 'ffn'; readonly block: number }
  /** cls_token, pos_embed, patch_embed.* */
  | { readonly kind: 'embed' }
  /** The final norm. */
  | { readonly kind: 'norm' }
  | { readonly kind: 'head' };

export type LayerKind = 'attn' | 'ffn';

export function paramGroup(name: string): ParamGroup {
  const m = /^blocks\.(\d+)\.(norm1|attn|norm2|mlp)\./.exec(name);
  if (m) return { kind: m[2] === 'norm1' || m[2] === 'attn' ? 'attn' : 'ffn', block: Number(m[1]) };
  if (name.startsWith('head.')) return { kind: 'head' };
  if (name.startsWith('norm.')) return { kind: 'norm' };
  if (name === 'cls_token' || name === 'pos_embed' || name.startsWith('patch_embed.')) return { kind: 'embed' };
  throw new Error(`'${name}' is not a parameter of this ViT`);
}

/** The layer (attention or FFN of a block) a tensor belongs to, if any. */
export function layerOf(name: string): { readonly kind: LayerKind; readonly block: number } | undefined {
  const g = paramGroup(name);
  return g.kind === 'attn' || g.kind === 'ffn' ? g : undefined;
}

/** timm's rule: no decay on norms and biases (1-D tensors) nor on the cls and position tokens. */
export const decays = (name: string, shape: readonly number[]): boolean =>
  shape.length >= 2 && name !== 'cls_token' && name !== 'pos_embed';
