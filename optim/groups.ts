/**
 * Parameter groups for gradient sharing and soft synchronisation, built from structural metadata
 * alone (never from name substrings).
 *
 * Two parameters of different models are candidates when they have the same role, kind, site,
 * layout and shape. Outside the layer stack (embeddings, final norm, pooler, heads) the candidates
 * of each model form one group. Inside it, depth is matched: the anchor is the deepest model, and
 * its layer i pairs with layer round(i * L' / L) of a model of L' layers; when several anchor layers
 * land on the same layer of a shallower model, that layer joins only the closest one. So a group
 * never holds two tensors of one model, gamma never meets beta (different roles), and embeddings
 * meet only embeddings of the same vocabulary size (same shape).
 *
 * @module
 */
import type { ParameterInfo } from "../models/parameters.ts";

/** One group: parameters of different models that share and synchronise. */
export interface ParameterGroup {
  /** The shared role. */
  readonly role: string;
  /** The shared shape. */
  readonly shape: readonly number[];
  /** Members, one per model, in the order of the models given. */
  readonly members: readonly { readonly model: string; readonly parameter: string }[];
}

function candidateKey(p: ParameterInfo): string {
  return [p.role, p.kind, p.site, p.layout, p.shape.join("x")].join("|");
}

/**
 * Groups the parameters of several models (one list per model, each model's parameters carrying
 * that model's name). Groups with fewer than two members are dropped.
 */
export function buildGroups(models: readonly (readonly ParameterInfo[])[]): ParameterGroup[] {
  const byKey = new Map<string, ParameterInfo[][]>();
  models.forEach((parameters, m) => {
    for (const p of parameters) {
      const key = candidateKey(p);
      if (!byKey.has(key)) byKey.set(key, models.map(() => []));
      byKey.get(key)![m].push(p);
    }
  });
  const groups: ParameterGroup[] = [];
  for (const perModel of byKey.values()) {
    const layered = perModel.some((list) => list.some((p) => p.layer !== null));
    const found = layered ? matchLayers(perModel) : matchSingles(perModel);
    for (const members of found) {
      if (members.length < 2) continue;
      groups.push({
        role: members[0].role,
        shape: members[0].shape,
        members: members.map((p) => ({ model: p.model, parameter: p.name })),
      });
    }
  }
  return groups;
}

/** Outside the layer stack: one group of the candidates, if each model has exactly one. */
function matchSingles(perModel: ParameterInfo[][]): ParameterInfo[][] {
  const present = perModel.filter((list) => list.length > 0);
  // Two tensors of one model with identical structure cannot be told apart, so none of them is shared.
  if (present.some((list) => list.length > 1)) return [];
  return [present.map((list) => list[0])];
}

/** Inside the layer stack: the deepest model anchors; other models' layers join by relative depth. */
function matchLayers(perModel: ParameterInfo[][]): ParameterInfo[][] {
  const present = perModel.filter((list) => list.length > 0);
  const depth = (list: ParameterInfo[]) => list[0].layerCount;
  const anchor = present.reduce((best, list) => (depth(list) > depth(best) ? list : best));
  const groups = new Map<number, ParameterInfo[]>();
  for (const p of anchor) {
    if (p.layer === null) return [];
    groups.set(p.layer, [p]);
  }
  for (const list of present) {
    if (list === anchor) continue;
    const L = depth(anchor);
    const own = depth(list);
    const byLayer = new Map(list.map((p) => [p.layer, p]));
    if (byLayer.size !== list.length || byLayer.has(null)) continue;
    // For each of this model's layers, the anchor layer that maps to it most exactly.
    const closest = new Map<number, { layer: number; distance: number }>();
    for (const anchorLayer of groups.keys()) {
      // round(i L' / L) can reach L' for the last layers; those compete for the last layer instead.
      const target = Math.min(Math.round((anchorLayer * own) / L), own - 1);
      const distance = Math.abs((anchorLayer * own) / L - target);
      const best = closest.get(target);
      if (!best || distance < best.distance) closest.set(target, { layer: anchorLayer, distance });
    }
    for (const [target, { layer }] of closest) {
      const p = byLayer.get(target);
      if (p) groups.get(layer)!.push(p);
    }
  }
  return [...groups.entries()].sort(([a], [b]) => a - b).map(([, members]) => members);
}
