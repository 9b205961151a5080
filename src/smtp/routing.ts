/**
 * Who sends: the first route whose criteria all match (sender, client address, AUTH user) chooses
 * the mailbox and the From policy; otherwise graph.mailbox. The header From counts as a sender
 * (a peer checked only the envelope and chose the mailbox from the header: field-lessons.md).
 * Pure functions; the SMTP hooks call them at RCPT (without the header) and at DATA (with it).
 */
import type { RouteConfig } from '../config/schema.js';
import { ClientAllowlist, senderMatches } from '../net/address-policy.js';

export interface RouteFacts {
  envelopeFrom: string;
  /** The header From address; undefined before DATA. */
  headerFrom?: string | null;
  clientAddress: string;
  authUser?: string | undefined;
}

export interface RouteChoice {
  mailbox: string;
  fromPolicy: 'keep' | 'rewrite' | 'reject';
  routeIndex: number | null;
  /** Set when the route has its own tenant/app. */
  graphProfile?: string;
}

export function graphProfileKey(graph: { tenantId: string; clientId: string }): string {
  return `${graph.tenantId}|${graph.clientId}`;
}

export class Router {
  private readonly clientLists: Array<ClientAllowlist | null>;

  constructor(
    private readonly routes: readonly RouteConfig[],
    private readonly defaultMailbox: string | undefined,
    /** Queued messages per mailbox, for choosing within a pool. */
    private readonly load: (mailbox: string) => number = () => 0,
  ) {
    this.clientLists = routes.map((r) => (r.clients ? new ClientAllowlist(r.clients) : null));
  }

  private matches(index: number, facts: RouteFacts, ignoreHeader: boolean): boolean {
    const route = this.routes[index] as RouteConfig;
    if (route.senders) {
      const candidates = [facts.envelopeFrom, ...(facts.headerFrom ? [facts.headerFrom] : [])];
      const senderOk = route.senders.some((p) => candidates.some((c) => c && senderMatches(p, c)));
      // Before DATA a header From might still match: keep the route possible.
      if (!senderOk && !(ignoreHeader && facts.headerFrom === undefined)) return false;
    }
    if (route.clients && !this.clientLists[index]?.allows(facts.clientAddress)) return false;
    if (route.authUsers && !(facts.authUser && route.authUsers.includes(facts.authUser))) return false;
    return true;
  }

  private readonly turns = new Map<number, number>();

  /** The least-loaded mailbox of the pool; ties rotate, so a burst arriving together is spread too. */
  private pick(route: RouteConfig, index: number): string {
    if (route.mailbox) return route.mailbox;
    const pool = route.mailboxes ?? [];
    const turn = this.turns.get(index) ?? 0;
    this.turns.set(index, turn + 1);
    let best = pool[turn % pool.length] as string;
    for (let k = 1; k < pool.length; k++) {
      const candidate = pool[(turn + k) % pool.length] as string;
      if (this.load(candidate) < this.load(best)) best = candidate;
    }
    return best;
  }

  /** At RCPT: could anyone send this message? (header From unknown yet) */
  possible(facts: RouteFacts): boolean {
    return this.defaultMailbox !== undefined || this.routes.some((_, i) => this.matches(i, facts, true));
  }

  /** At DATA, with the header From: the route that sends, or null (refuse). */
  choose(facts: RouteFacts): RouteChoice | null {
    for (let i = 0; i < this.routes.length; i++) {
      if (this.matches(i, facts, false)) {
        const route = this.routes[i] as RouteConfig;
        return { mailbox: this.pick(route, i), fromPolicy: route.fromPolicy, routeIndex: i, ...(route.graph ? { graphProfile: graphProfileKey(route.graph) } : {}) };
      }
    }
    return this.defaultMailbox ? { mailbox: this.defaultMailbox, fromPolicy: 'keep', routeIndex: null } : null;
  }
}

/** RCPT TO:<postmaster> without a domain, which every SMTP server must accept (RFC 5321 §4.5.1). */
export function isBarePostmaster(address: string): boolean {
  return address.toLowerCase() === 'postmaster';
}

/**
 * The envelope recipients Graph sends to once the route is known. The bare <postmaster> is the
 * postmaster of the organisation the relay sends for: postmaster@ the sending mailbox's domain
 * (Graph needs a full address; the relay's own host name is usually no mail domain).
 */
export function resolveRecipients(rcptTo: readonly string[], mailbox: string): string[] {
  const domain = mailbox.slice(mailbox.lastIndexOf('@') + 1);
  return rcptTo.map((r) => (isBarePostmaster(r) ? `postmaster@${domain}` : r));
}
