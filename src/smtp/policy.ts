/**
 * Pure intake decisions, separated from smtp-server's callbacks so each is tested as a table.
 */

/** The sending mailbox for a message; routes (issue 4) will extend this. null: nobody may send it. */
export function chooseMailbox(defaultMailbox: string | undefined): string | null {
  return defaultMailbox ?? null;
}

